#!/usr/bin/env python3
"""A plain, careful PyTorch training loop: the baseline of the transfer table.

Trains one (subset, strategy, seed) on the same TorchScript base that Kaizen
fine-tunes (downloaded with `kaizenctl models download`), with a new linear
head, and prints the accuracy on a test set as one JSON line prefixed with
"pytorch_loop_result ". bench/transfer/transfer_table.sh runs it beside every
Kaizen job (issue 14: Kaizen's defaults against "a carefully trained plain
PyTorch loop on the same base, subsets and test set").

The settings are fixed here once, chosen from common practice before any run
and never on the test set (see bench/README.md):
  - 200 optimiser steps (--steps) whatever the subset size; batches of
    min(16, N) images drawn from reshuffled passes over the N training images,
    so every batch is full (no tiny last batch for BatchNorm);
  - AdamW (betas 0.9/0.999, weight decay 0.01, torch's default), a linear
    warm-up over the first 5% of the steps, then cosine decay to 0;
  - learning rates: FEATURE_EXTRACTION head 1e-2 (backbone frozen); FINE_TUNE
    head 1e-3 and the top block 1e-4 (the rest frozen); FULL head 1e-3 and
    backbone 1e-4; SCRATCH 1e-3 for every layer from a fresh initialisation;
  - plain cross-entropy; light augmentation for every strategy: a random
    crop of the image zero-padded by 2 pixels and a horizontal flip with
    probability 0.5 (Fashion-MNIST items are left-right symmetric);
  - BatchNorm in train mode in the trained parts, frozen parts in eval mode
    (their running statistics stay the base's); eval mode for testing; the
    model after the last step is scored, nothing is selected.
Inputs are scaled to [0, 1] and normalised with the model's mean and std
(--mean, --std: the model metadata's normalization), as Kaizen does.
"""
import argparse
import gzip
import json
import math
import struct
import sys
import time

import torch
from torch import nn


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def load_images(images_path, labels_path):
    x = read_idx(images_path)
    if x.dim() == 3:
        x = x.unsqueeze(1)  # [N, 1, H, W]
    y = read_idx(labels_path).long()
    if x.shape[0] != y.shape[0]:
        sys.exit(f"{images_path}: {x.shape[0]} images but {y.shape[0]} labels")
    return x, y


class Classifier(nn.Module):
    """The base's backbone (forward_features) and a new linear head."""

    def __init__(self, base, in_features, num_classes):
        super().__init__()
        self.base = base
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(self.base.forward_features(x))


def blocks(base, head_path):
    """Top-level children holding parameters outside the head, bottom to top
    (resnet-small: stem, layer1..layer3); a lone container is replaced by its
    children, as Kaizen's FINE_TUNE counts blocks."""
    def with_params(module, prefix):
        return [(prefix + name, child) for name, child in module.named_children()
                if prefix + name != head_path and any(True for _ in child.parameters())]
    found = with_params(base, "")
    if len(found) == 1:
        found = with_params(found[0][1], found[0][0] + ".")
    return found


def reinitialise(base, head_path):
    """SCRATCH: a fresh initialisation of the same architecture, as the
    built-in models are created (Kaiming-normal fan_out convolutions,
    BatchNorm weight 1 / bias 0 and fresh running statistics)."""
    for name, m in base.named_modules():
        if name == head_path:
            continue
        kind = getattr(m, "original_name", type(m).__name__)
        params = dict(m.named_parameters(recurse=False))
        bufs = dict(m.named_buffers(recurse=False))
        with torch.no_grad():
            if kind.startswith("Conv"):
                nn.init.kaiming_normal_(params["weight"], mode="fan_out", nonlinearity="relu")
                if "bias" in params:
                    params["bias"].zero_()
            elif kind.startswith("BatchNorm"):
                params["weight"].fill_(1.0)
                params["bias"].zero_()
                bufs["running_mean"].zero_()
                bufs["running_var"].fill_(1.0)
                if "num_batches_tracked" in bufs:
                    bufs["num_batches_tracked"].zero_()
            elif params and kind != "Linear":
                sys.exit(f"SCRATCH: do not know how to initialise {name} ({kind})")


def augment(x, generator):
    """Zero-pad by 2, random 28x28 crop, horizontal flip with p=0.5. Works on
    the pixels (0..255), before normalisation, so the padding is black like the
    Fashion-MNIST background (as Kaizen's augmenter does)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (n,), generator=generator)
    dy = torch.randint(0, 5, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="TorchScript base model file")
    p.add_argument("--train_images", required=True)
    p.add_argument("--train_labels", required=True)
    p.add_argument("--test_images", required=True)
    p.add_argument("--test_labels", required=True)
    p.add_argument("--strategy", required=True,
                   choices=["scratch", "feature_extraction", "fine_tune", "full"])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--mean", type=float, default=0.5)
    p.add_argument("--std", type=float, default=0.5)
    p.add_argument("--head", default="fc", help="module path of the base's head")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save_state", help="write the trained state_dict here (for checks)")
    a = p.parse_args()

    t_start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    x_train, y_train = load_images(a.train_images, a.train_labels)
    x_test, y_test = load_images(a.test_images, a.test_labels)
    num_classes = int(y_train.max()) + 1
    norm = lambda px: (px.float().div(255.0) - a.mean) / a.std  # noqa: E731 (pixels 0..255)

    base = torch.jit.load(a.base, map_location="cpu")
    if not hasattr(base, "forward_features"):
        sys.exit(f"{a.base}: no forward_features method; this loop needs one")
    head = dict(base.named_modules()).get(a.head)
    if head is None:
        sys.exit(f"{a.base}: no module {a.head!r} (the head)")
    in_features = head.weight.shape[1]
    if a.strategy == "scratch":
        reinitialise(base, a.head)
    model = Classifier(base, in_features, num_classes)  # the head from torch.manual_seed

    # Which backbone parts train, at which learning rate.
    head_params = {id(q) for q in dict(base.named_modules())[a.head].parameters()}
    backbone = [(n, q) for n, q in base.named_parameters() if id(q) not in head_params]
    for _, q in base.named_parameters():
        q.requires_grad_(False)
    frozen_modules = []
    if a.strategy == "feature_extraction":
        head_lr, backbone_lr, trainable = 1e-2, 0.0, []
        frozen_modules = [base]
    elif a.strategy == "fine_tune":
        head_lr, backbone_lr = 1e-3, 1e-4
        all_blocks = blocks(base, a.head)
        top_path, top = all_blocks[-1]
        trainable = list(top.parameters())
        frozen_modules = [m for path, m in all_blocks[:-1]]
    elif a.strategy == "full":
        head_lr, backbone_lr, trainable = 1e-3, 1e-4, [q for _, q in backbone]
    else:  # scratch
        head_lr, backbone_lr, trainable = 1e-3, 1e-3, [q for _, q in backbone]
    for q in trainable:
        q.requires_grad_(True)
    groups = [{"params": list(model.head.parameters()), "lr": head_lr}]
    if trainable:
        groups.append({"params": trainable, "lr": backbone_lr})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=0.01)
    warmup = max(1, round(0.05 * a.steps))

    def lr_factor(step):  # step 0-based
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, a.steps - warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    def set_train_mode():
        model.train()
        for m in frozen_modules:
            m.eval()

    n = x_train.shape[0]
    batch = min(a.batch_size, n)
    order = torch.empty(0, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()
    set_train_mode()
    t_train = time.time()
    last_loss = float("nan")
    for step in range(a.steps):
        if order.numel() < batch:  # full batches from reshuffled passes
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch], order[batch:]
        xb = norm(augment(x_train[idx].float(), gen))
        loss = loss_fn(model(xb), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last_loss = loss.item()
    train_s = time.time() - t_train

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x_test.shape[0], 100):  # one thread: 500 a batch ran ~10x slower per image
            pred = model(norm(x_test[i:i + 100])).argmax(1)
            correct += int((pred == y_test[i:i + 100]).sum())
    acc = correct / x_test.shape[0]
    if a.save_state:
        torch.save(model.state_dict(), a.save_state)
    print("pytorch_loop_result " + json.dumps({
        "strategy": a.strategy, "seed": a.seed, "train_images": n, "steps": a.steps,
        "batch_size": batch, "final_train_loss": round(last_loss, 4),
        "accuracy": round(acc, 6), "train_seconds": round(train_s, 2),
        "seconds": round(time.time() - t_start, 2)}), flush=True)


if __name__ == "__main__":
    main()
