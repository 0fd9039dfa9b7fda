#!/usr/bin/python3
"""Plots the training loss per epoch of bench/train/train_throughput.sh's runners:
the C++ trainer against the PyTorch loop for FULL and FINE_TUNE (same model,
initial weights, data order rule, hyperparameters), and FEATURE_EXTRACTION
with and without the feature cache. The two sides of a comparison should
learn alike; the thin lines are single repeats, the thick ones the median.

  /usr/bin/python3 bench/train/train_plot.py RUN_DIR [--out=bench/train/train_loss_curves.png]
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

PANELS = [
    ("STRATEGY_FULL", [("full-cpp", "C++ trainer"), ("full-python", "PyTorch loop"),
                       ("full-cpp-plain", "C++ plain libtorch loop")]),
    ("STRATEGY_FINE_TUNE", [("ft-cpp", "C++ trainer"), ("ft-python", "PyTorch loop")]),
    ("STRATEGY_FEATURE_EXTRACTION", [("fe-cpp-cache", "C++ trainer, feature cache"),
                                     ("fe-cpp-nocache", "C++ trainer, cache off"),
                                     ("fe-python", "PyTorch loop, frozen backbone")]),
]
COLORS = ["tab:blue", "tab:orange", "tab:green"]


def read(run_dir, name):
    runs = []
    for path in sorted(glob.glob(os.path.join(run_dir, f"{name}-r*.jsonl"))):
        if not re.match(rf"{re.escape(name)}-r\d+\.jsonl$", os.path.basename(path)):
            continue
        epochs = []
        for line in open(path):
            if line.startswith("{"):
                rec = json.loads(line)
                if "epoch" in rec and "event" not in rec:
                    epochs.append((rec["epoch"], rec["train_loss"]))
        if epochs:
            runs.append(epochs)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default="bench/train/train_loss_curves.png")
    args = parser.parse_args()
    panels = [(title, [(n, l, read(args.run_dir, n)) for n, l in runners])
              for title, runners in PANELS]
    panels = [(t, [r for r in rs if r[2]]) for t, rs in panels]
    panels = [(t, rs) for t, rs in panels if rs]
    if not panels:
        sys.exit(f"no runs in {args.run_dir}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (title, runners) in zip(axes[0], panels):
        for color, (_, label, runs) in zip(COLORS, runners):
            for epochs in runs:
                ax.plot(*zip(*epochs), color=color, alpha=0.25, linewidth=0.8)
            n = min(len(e) for e in runs)
            med = [(runs[0][i][0], statistics.median(r[i][1] for r in runs)) for i in range(n)]
            ax.plot(*zip(*med), color=color, marker="o", linewidth=2,
                    label=f"{label} ({len(runs)} runs)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("training loss (label smoothing 0.1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    run = os.path.normpath(args.run_dir)
    if os.path.basename(run) == "train-runs":  # bench/runs/<suite run id>/train-runs
        run = os.path.dirname(run)
    fig.suptitle(f"Training loss per epoch, bench/train/train_throughput.sh: {os.path.basename(run)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
