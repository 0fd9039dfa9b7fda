#!/usr/bin/python3
"""A minimal Python baseline for Kaizen's serving benchmark.

Serves one TorchScript model file written by Kaizen (`kaizenctl models
download NAME out.pt`) over the same gRPC API as kaizen-server, so that the
very same `kaizenctl bench predict` drives both:

  kaizen.v1.InferenceService/Predict  encoded images (JPEG/PNG, via PIL) or
                                      float tensors; softmax; top_k
  kaizen.v1.ModelService/GetModel     the file's metadata, which `bench
                                      predict` asks for the input shape

It computes ONE REQUEST AT A TIME (a lock around the whole handler, and one
gRPC worker thread by default): the plain "load the model, serve it" loop
that people write first, without batching. Input shape, normalisation and
class names come from the file's kaizen.json (proto3 JSON of kaizen.v1.Model).
Images are prepared as kaizen-server prepares them: channels converted (grey
repeated to RGB; RGB to grey by ITU-R 601 luminance), bilinear resize
(align_corners=False) in float, rounded to 0..255, then
(x / 255 - mean[c]) / std[c].

Uses only Debian's python3-grpcio, python3-protobuf, python3-torch and
python3-pil: the message classes are generated at start-up with the system
`protoc --python_out` into a temporary directory (no grpc_tools), and the
methods are registered with grpc.method_handlers_generic_handler.

  /usr/bin/python3 tools/predict_server_py.py MODEL.pt --port=50052 --threads=2
"""

import argparse
import concurrent.futures
import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import grpc
import torch
import torch.nn.functional as F
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate_messages(proto_dir):
    """Runs protoc --python_out on proto/kaizen/v1 and imports the modules."""
    out = tempfile.mkdtemp(prefix="kaizen-pb2-")
    protos = sorted(
        os.path.relpath(p, proto_dir)
        for p in glob.glob(os.path.join(proto_dir, "kaizen", "v1", "*.proto")))
    subprocess.run(["protoc", "-I" + proto_dir, "--python_out=" + out] + protos,
                   check=True)
    sys.path.insert(0, out)
    from kaizen.v1 import inference_service_pb2, model_service_pb2  # noqa: E402
    shutil.rmtree(out, ignore_errors=True)  # the modules are loaded
    return inference_service_pb2, model_service_pb2


class Abort(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class ModelServer:
    def __init__(self, path, inference_pb2, model_pb2, max_inputs,
                 max_image_pixels):
        from google.protobuf import json_format
        self.pb = inference_pb2
        extra = {"kaizen.json": ""}
        self.module = torch.jit.load(path, map_location="cpu",
                                     _extra_files=extra)
        self.module.eval()
        if not extra["kaizen.json"]:
            sys.exit(f"{path} has no kaizen.json; download it with "
                     "`kaizenctl models download`")
        self.model = json_format.Parse(extra["kaizen.json"], model_pb2.Model(),
                                       ignore_unknown_fields=True)
        shape = list(self.model.input_shape)
        if len(shape) != 3:
            sys.exit(f"{path}: kaizen.json has no [C, H, W] input shape")
        self.shape = shape
        c = shape[0]
        mean = list(self.model.normalization.mean)
        std = list(self.model.normalization.std)
        if not mean:
            mean, std = (([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
                         if c == 3 else ([0.5] * c, [0.5] * c))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.labels = list(self.model.class_names)
        self.max_inputs = max_inputs
        self.max_image_pixels = max_image_pixels
        self.lock = threading.Lock()
        # TorchScript's profiling executor optimises the graph over the first
        # calls; do them now, as kaizen-server warms up a version it loads.
        with torch.inference_mode():
            for n in (1, 1, 1, 2):
                self.module(torch.zeros([n] + shape))

    # --- preprocessing ------------------------------------------------------

    def image(self, data, what):
        c, h, w = self.shape
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            if fmt not in ("JPEG", "PNG"):
                raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                            f"{what}: {fmt or 'unknown'} images are not "
                            "supported; send JPEG or PNG")
            if img.width * img.height > self.max_image_pixels:
                raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{what}: {img.width}x{img.height} is over "
                            f"{self.max_image_pixels} pixels")
            img.load()
        except Abort:
            raise
        except Exception as e:  # PIL raises many kinds
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{what}: cannot decode the image: {e}")
        grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
        if grey:
            img = img.convert("L")
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            t = t.view(1, img.height, img.width).float()
            if c == 3:
                t = t.expand(3, -1, -1)
        else:
            img = img.convert("RGB")
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            t = t.view(img.height, img.width, 3).permute(2, 0, 1).float()
            if c == 1:
                t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).unsqueeze(0)
        if (t.shape[1], t.shape[2]) != (h, w):
            t = F.interpolate(t.unsqueeze(0), size=(h, w), mode="bilinear",
                              align_corners=False).squeeze(0)
        t = t.round().clamp(0, 255)
        return ((t / 255.0 - self.mean) / self.std).unsqueeze(0)

    def tensor(self, tensor, what):
        shape = list(tensor.shape)
        if shape == self.shape:
            shape = [1] + shape
        if len(shape) != 4 or shape[1:] != self.shape or shape[0] < 1:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{what}: shape {shape} given; the model takes "
                        f"{self.shape} or [N, {', '.join(map(str, self.shape))}]")
        values = torch.tensor(tensor.values, dtype=torch.float32)
        if values.numel() != shape[0] * shape[1] * shape[2] * shape[3]:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{what}: {values.numel()} values for shape {shape}")
        if not torch.isfinite(values).all():
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{what}: values must be finite")
        return values.view(shape)

    # --- RPCs ---------------------------------------------------------------

    def check_model(self, name, version):
        if name != self.model.name:
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"model {name!r} not found (this server serves "
                        f"{self.model.name!r})")
        if version not in (0, self.model.version):
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"model {name} has no version {version} here (this "
                        f"server serves version {self.model.version})")

    def predict(self, request, context):
        with self.lock:  # one request at a time, preprocessing included
            try:
                return self._predict(request)
            except Abort as e:
                context.abort(e.code, e.message)

    def _predict(self, request):
        self.check_model(request.model, request.version)
        n = len(request.inputs)
        if n == 0:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "no inputs")
        if n > self.max_inputs:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{n} inputs; at most {self.max_inputs} per request")
        parts = []
        for i, item in enumerate(request.inputs):
            what = f"inputs[{i}]"
            kind = item.WhichOneof("data")
            if kind == "encoded_image":
                parts.append(self.image(item.encoded_image, what))
            elif kind == "tensor":
                parts.append(self.tensor(item.tensor, what))
            else:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{what}: empty input")
        batch = parts[0] if len(parts) == 1 else torch.cat(parts)
        with torch.inference_mode():
            probs = torch.softmax(self.module(batch).float(), dim=1)
            k = min(max(request.top_k, 1), probs.shape[1])
            top_p, top_i = probs.topk(k, dim=1)
        response = self.pb.PredictResponse(model=self.model.name,
                                           version=self.model.version)
        for p_row, i_row in zip(top_p.tolist(), top_i.tolist()):
            prediction = response.predictions.add()
            for p, i in zip(p_row, i_row):
                label = self.labels[i] if i < len(self.labels) else str(i)
                prediction.classes.add(index=i, label=label, probability=p)
        return response

    def get_model(self, request, context):
        try:
            self.check_model(request.name, request.version)
        except Abort as e:
            context.abort(e.code, e.message)
        return self.model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .pt file from `kaizenctl models download`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: one per core)")
    parser.add_argument("--workers", type=int, default=1,
                        help="gRPC worker threads; the lock still computes "
                             "one request at a time")
    parser.add_argument("--max_inputs", type=int, default=256)
    parser.add_argument("--max_image_pixels", type=int, default=25_000_000)
    parser.add_argument("--proto_dir", default=os.path.join(REPO, "proto"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    inference_pb2, model_pb2 = generate_messages(args.proto_dir)
    server_impl = ModelServer(args.model, inference_pb2, model_pb2,
                              args.max_inputs, args.max_image_pixels)

    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("kaizen.v1.InferenceService", {
            "Predict": grpc.unary_unary_rpc_method_handler(
                server_impl.predict,
                request_deserializer=inference_pb2.PredictRequest.FromString,
                response_serializer=inference_pb2.PredictResponse.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("kaizen.v1.ModelService", {
            "GetModel": grpc.unary_unary_rpc_method_handler(
                server_impl.get_model,
                request_deserializer=model_pb2.GetModelRequest.FromString,
                response_serializer=model_pb2.Model.SerializeToString),
        }),
    ))
    address = f"{args.host}:{args.port}"
    if server.add_insecure_port(address) == 0:
        sys.exit(f"cannot listen on {address}")
    server.start()
    m = server_impl.model
    print(json.dumps({"listening": address, "model": m.name,
                      "version": m.version, "input_shape": server_impl.shape,
                      "threads": torch.get_num_threads(),
                      "workers": args.workers}), file=sys.stderr, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
