#!/usr/bin/python3
"""Accuracy of a served model on an IDX image/label pair, through Predict.

Sends the images as PNGs (the server resizes and normalises them exactly as
it prepared the training images) in batches over kaizen.v1.InferenceService,
and prints one JSON object: the answering version, accuracy and per-class
accuracy. Uses Debian's python3-grpcio and message classes generated with the
system protoc (see predict_server_py.generate_messages).

Usage: eval_accuracy.py --server=HOST:PORT --model=NAME IMAGES LABELS
"""
import argparse
import gzip
import io
import json
import os
import struct
import sys

import grpc
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from predict_server_py import REPO, generate_messages  # noqa: E402


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xff
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--proto_dir", default=os.path.join(REPO, "proto"))
    p.add_argument("images")
    p.add_argument("labels")
    args = p.parse_args()
    inference_pb2, _ = generate_messages(args.proto_dir)
    (n, h, w), pixels = read_idx(args.images)
    (n_labels,), labels = read_idx(args.labels)
    assert n == n_labels, f"{n} images but {n_labels} labels"
    channel = grpc.insecure_channel(args.server, options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
    predict = channel.unary_unary(
        "/kaizen.v1.InferenceService/Predict",
        request_serializer=inference_pb2.PredictRequest.SerializeToString,
        response_deserializer=inference_pb2.PredictResponse.FromString)
    correct, per_class, seen, versions = 0, {}, {}, set()
    for start in range(0, n, args.batch):
        req = inference_pb2.PredictRequest(model=args.model, version=args.version, top_k=1)
        end = min(n, start + args.batch)
        for i in range(start, end):
            buf = io.BytesIO()
            Image.frombytes("L", (w, h), pixels[i * h * w:(i + 1) * h * w]).save(buf, "PNG")
            req.inputs.add(encoded_image=buf.getvalue())
        resp = predict(req, timeout=600)
        versions.add(resp.version)
        for i, pred in zip(range(start, end), resp.predictions):
            label = labels[i]
            seen[label] = seen.get(label, 0) + 1
            if pred.classes[0].index == label:
                correct += 1
                per_class[label] = per_class.get(label, 0) + 1
    print(json.dumps({
        "model": args.model,
        "versions": sorted(versions),
        "images": n,
        "accuracy": correct / n,
        "per_class_accuracy": {str(c): per_class.get(c, 0) / seen[c] for c in sorted(seen)},
    }))


if __name__ == "__main__":
    main()
