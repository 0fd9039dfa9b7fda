#!/usr/bin/env python3
"""FEATURE_EXTRACTION's head settings on many drawn few-shot sets, scored on validation images.

At one image per class the images a user happens to have matter more than any setting: with
the same settings, different 5-image sets score tens of points apart. This script measures
Kaizen's FEATURE_EXTRACTION head settings against the plain PyTorch loop's
(bench/transfer/pytorch_loop.py) paired on the same drawn sets, seeds and frozen base,
without the test set:
  - the training images: PER_CLASS images of each of Fashion-MNIST classes 5-9, drawn by set
    seed from the first 1,000 training images of each class;
  - the score: accuracy on training images 1,000-1,399 of each class (2,000 images no set
    holds), never the test set;
  - the head trains on the base's frozen features (eval mode) of the 50 views the shared
    augmentation can make of an image (zero-pad 2, a 28x28 crop, a horizontal flip), drawn per
    step, as both trainers do; "kaizen" standardises the features with the clean training
    images' mean and spread as the trainer does (server/training/trainer.cc), "loop" trains on
    raw features.
The settings (hyperparameters.cc's FEATURE_EXTRACTION defaults and pytorch_loop.py's) are
written out below; keep them in step with those files.

Usage: /usr/bin/python3 bench/transfer/fe_head_sets.py BASE.pt [--per_class 1] [--sets 20]
BASE.pt: a Kaizen resnet-small base pretrained on classes 0-4 (transfer_table.sh's
SAVE_BASE_FILE, or kaizen_transfer_experiment's cached pretrained-e2.pt).
"""
import argparse
import math
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from make_fashion_subsets import load  # noqa: E402

SETTINGS = {
    # hyperparameters.cc, STRATEGY_FEATURE_EXTRACTION below 50 images: lr 0.02, AdamW weight
    # decay 1e-4, label smoothing 0.1, cosine to 1% without warm-up, 300 steps (kMinSteps).
    "kaizen": dict(standardise=True, label_smoothing=0.1, lr=0.02, weight_decay=1e-4,
                   steps=300, warmup_share=0.0, min_lr_ratio=0.01),
    # pytorch_loop.py, feature_extraction: lr 1e-2, weight decay 0.01, plain cross-entropy,
    # 5% warm-up then cosine to 0, 200 steps.
    "loop": dict(standardise=False, label_smoothing=0.0, lr=1e-2, weight_decay=0.01,
                 steps=200, warmup_share=0.05, min_lr_ratio=0.0),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base")
    p.add_argument("--per_class", type=int, default=1)
    p.add_argument("--sets", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    images, labels = load("/usr/share/datasets/fashion-mnist", "train")
    x_all = torch.frombuffer(bytearray(images), dtype=torch.uint8).reshape(-1, 1, 28, 28)
    y_all = torch.tensor(list(labels))
    by_class = {c: (y_all == c).nonzero().flatten() for c in range(5, 10)}
    base = torch.jit.load(a.base, map_location="cpu").eval()

    @torch.no_grad()
    def features(x):
        x = (x.float() / 255 - 0.5) / 0.5  # the base's normalisation (mean 0.5, std 0.5)
        return torch.cat([base.forward_features(x[i:i + 500]) for i in range(0, len(x), 500)])

    val_idx = torch.cat([by_class[c][1000:1400] for c in range(5, 10)])
    val_f, val_y = features(x_all[val_idx]), y_all[val_idx] - 5

    def views(x):  # the 50 views of one image: [50, 1, 28, 28]
        padded = nn.functional.pad(x.float(), (2, 2, 2, 2))
        out = []
        for dy in range(5):
            for dx in range(5):
                crop = padded[:, dy:dy + 28, dx:dx + 28]
                out += [crop, crop.flip(-1)]
        return torch.stack(out)

    def train(clean, view_f, y, seed, standardise, label_smoothing, lr, weight_decay, steps,
              warmup_share, min_lr_ratio):
        n = clean.shape[0]
        if standardise:
            mean, std = clean.mean(0), clean.std(0, unbiased=False)
            typical = std.mean()
            std = torch.where(std > 1e-3 * typical, std, typical)
        else:
            mean, std = torch.zeros(clean.shape[1]), torch.ones(clean.shape[1])
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(clean.shape[1], 5)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        warmup = max(1, round(warmup_share * steps)) if warmup_share > 0 else 0

        def factor(step):
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, steps - warmup)
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            if order.numel() < n:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            i, order = order[:n], order[n:]
            v = torch.randint(0, view_f.shape[1], (n,), generator=gen)
            loss = loss_fn(head((view_f[i, v] - mean) / std), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            return 100 * (head((val_f - mean) / std).argmax(1) == val_y).float().mean().item()

    scores = {name: [] for name in SETTINGS}
    for s in range(1, a.sets + 1):
        gen = torch.Generator().manual_seed(1000 + s)
        ids = torch.cat([by_class[c][torch.randperm(1000, generator=gen)[:a.per_class]]
                         for c in range(5, 10)])
        clean = features(x_all[ids])
        view_f = features(torch.stack([views(x_all[i]) for i in ids]).reshape(-1, 1, 28, 28))
        view_f = view_f.reshape(len(ids), 50, -1)
        for name, kw in SETTINGS.items():
            scores[name].append(train(clean, view_f, y_all[ids] - 5, s, **kw))
        print(f"set {s:>2}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in scores.items()),
              flush=True)
    k, l = scores["kaizen"], scores["loop"]
    d = [x - y for x, y in zip(k, l)]
    print(f"\n{a.per_class} image(s) per class, {a.sets} drawn sets, 2,000 validation images")
    for name, v in scores.items():
        print(f"{name:>6}: mean {statistics.mean(v):.2f} std {statistics.stdev(v):.2f} "
              f"range {min(v):.1f}-{max(v):.1f}")
    print(f"kaizen - loop, paired: {statistics.mean(d):+.2f} (std {statistics.stdev(d):.2f}), "
          f"kaizen ahead on {sum(x > 0 for x in d)} of {len(d)} sets")


if __name__ == "__main__":
    main()
