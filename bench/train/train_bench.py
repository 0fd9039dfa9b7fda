#!/usr/bin/python3
"""The plain PyTorch training loop that Kaizen's C++ trainer is measured against.

Trains the TorchScript model written by `kaizen_train_bench --save_model` (same
architecture, same initial weights) on the same Fashion-MNIST images with the
hyperparameters that Kaizen resolved (`--config`, written by
`kaizen_train_bench --save_config`): same optimiser, learning rates, weight
decay, schedule, label smoothing, batch size, last-batch rule and threads.

The loop is the fast, idiomatic one: the whole dataset is one uint8 tensor,
each batch is a shuffled index_select (no DataLoader), normalised on the fly
exactly as the C++ trainer does (x/255, (x - mean) / std). Per step it does
the same bookkeeping as the C++ trainer (loss.item(), correct count).

  full:               every parameter trains, model in train mode.
  fine_tune:          the head and the backbone parameters the config lists
                      (`trainable_backbone`: Kaizen's top `trainable_blocks`
                      blocks) train; every submodule whose parameters are all
                      frozen is in eval mode (BatchNorm keeps its statistics),
                      as the C++ trainer does.
  feature_extraction: the backbone is frozen (eval mode, no_grad), only the
                      head (`fc`) trains; the backbone runs on every batch of
                      every epoch -- the same job without a feature cache.

Prints one JSON line per epoch: {"side": "python", "epoch", "seconds",
"images_per_second", "cpu_seconds" (process CPU time, all threads),
"train_loss", "train_accuracy"}.

Run it with /usr/bin/python3 (Debian's interpreter has torch 1.13).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from kaizen_schedule import batches_per_epoch, lr_factor  # noqa: E402

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path, offset):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(data_dir, n):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), 16)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), 8)
    images = images.reshape(-1, 1, 28, 28)[:n].copy()
    labels = labels[:n].astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def make_optimizer(cfg, groups, foreach):
    kind = cfg["optimizer"]
    kw = {}
    if foreach is not None:
        kw["foreach"] = foreach
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"], **kw)
    betas = (cfg["beta1"], cfg["beta2"])
    if kind == "adam":
        return torch.optim.Adam(groups, lr=groups[0]["lr"], betas=betas,
                                weight_decay=cfg["weight_decay"], **kw)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=betas,
                             weight_decay=cfg["weight_decay"], **kw)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="TorchScript file from kaizen_train_bench")
    p.add_argument("--config", required=True, help="JSON from kaizen_train_bench --save_config")
    p.add_argument("--strategy", choices=["full", "fine_tune", "feature_extraction"], default=None,
                   help="defaults to the config's strategy")
    p.add_argument("--images", type=int, default=None, help="defaults to the config's")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data_dir", default=DEFAULT_DATA)
    p.add_argument("--profile_trace", default="",
                   help="record the ops of the run (torch.autograd.profiler) as a Chrome trace")
    p.add_argument("--foreach", choices=["default", "on", "off"], default="default",
                   help="optimizer foreach implementation (1.13's default is off)")
    args = p.parse_args()

    with open(args.config) as f:
        cfg = json.load(f)
    strategy = args.strategy or cfg["strategy"]
    n = args.images or cfg["images"]
    epochs = args.epochs or cfg["epochs"]
    batch_size = args.batch_size or cfg["batch_size"]
    threads = args.threads or cfg["threads"]
    foreach = {"default": None, "on": True, "off": False}[args.foreach]

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.get("seed", 1) & 0x7FFFFFFF)
    images, labels = load_fashion_mnist(args.data_dir, n)
    n = labels.shape[0]
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)

    model = torch.jit.load(args.model)
    head = list(model.fc.parameters())
    head_ids = {id(t) for t in head}
    backbone = [t for t in model.parameters() if id(t) not in head_ids]
    lr = cfg["learning_rate"]
    if strategy == "full":
        for t in model.parameters():
            t.requires_grad_(True)
        groups = [{"params": head, "lr": lr},
                  {"params": backbone, "lr": lr * cfg["backbone_lr_multiplier"]}]
        model.train()
    elif strategy == "fine_tune":
        trainable = set(cfg["trainable_backbone"])
        tuned = []
        for name, t in model.named_parameters():
            if id(t) in head_ids:
                t.requires_grad_(True)
            else:
                t.requires_grad_(name in trainable)
                if name in trainable:
                    tuned.append(t)
        if len(tuned) != len(trainable):
            sys.exit(f"config lists {len(trainable)} trainable backbone parameters, "
                     f"the model has {len(tuned)} of them")
        groups = [{"params": head, "lr": lr},
                  {"params": tuned, "lr": lr * cfg["backbone_lr_multiplier"]}]
        model.train()
        for name, m in model.named_modules():
            params = list(m.parameters())
            if name and params and not any(t.requires_grad for t in params):
                m.eval()
    else:
        for t in backbone:
            t.requires_grad_(False)
        for t in head:
            t.requires_grad_(True)
        groups = [{"params": head, "lr": lr}]
        model.eval()  # frozen BatchNorm statistics, as the C++ trainer does
    base_lrs = [g["lr"] for g in groups]
    opt = make_optimizer(cfg, groups, foreach)
    steps = batches_per_epoch(n, batch_size, cfg["drop_last_fraction"])
    smoothing = cfg["label_smoothing"]

    print(json.dumps({"side": "python", "event": "setup", "strategy": strategy, "images": n,
                      "epochs": epochs, "batch_size": batch_size, "threads": threads,
                      "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                      "optimizer": type(opt).__name__, "foreach": args.foreach,
                      "lrs": base_lrs, "steps_per_epoch": steps}), flush=True)

    profiler = None
    if args.profile_trace:
        profiler = torch.autograd.profiler.profile()
        profiler.__enter__()
    for epoch in range(epochs):
        start = time.perf_counter()
        cpu_start = time.process_time()
        order = torch.randperm(n)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(steps):
            factor = lr_factor(epoch * steps + b, cfg, steps, epochs)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor
            idx = order[b * batch_size:(b + 1) * batch_size]
            y = labels.index_select(0, idx)
            x = (images.index_select(0, idx).float().div_(255.0) - mean) / std
            if strategy != "feature_extraction":
                logits = model(x)
            else:
                with torch.no_grad():
                    features = model.forward_features(x)
                logits = model.fc(features)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()
            if not math.isfinite(value):
                sys.exit(f"loss became {value} at epoch {epoch + 1} step {b + 1}")
            k = idx.shape[0]
            loss_sum += value * k
            correct += int((logits.argmax(1) == y).sum().item())
            seen += k
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        print(json.dumps({"side": "python", "strategy": strategy, "epoch": epoch + 1,
                          "seconds": seconds, "images_per_second": seen / seconds,
                          "cpu_seconds": cpu,
                          "train_loss": loss_sum / seen, "train_accuracy": correct / seen}),
              flush=True)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        profiler.export_chrome_trace(args.profile_trace)


if __name__ == "__main__":
    main()
