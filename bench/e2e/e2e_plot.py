#!/usr/bin/python3
"""Plots bench/e2e/e2e_folder_bench.sh results as learning curves against the
wall clock: training loss, validation loss and validation accuracy at the end
of every epoch, for Kaizen and each PyTorch DataLoader setting, from the
moment the user starts (upload or interpreter start) until the last epoch.
Each point is the median over rounds of the epoch's end time and metric; the
thin lines are the single rounds.

  /usr/bin/python3 bench/e2e/e2e_plot.py [bench/runs/history/e2e_results.jsonl]
      [--run_id=ID (default: the last run in the file)] [--out=FILE.png]
"""

import argparse
import os
import sys
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from results_file import load_run  # noqa: E402

PANELS = [("train_loss", "training loss"), ("val_loss", "validation loss"),
          ("val_accuracy", "validation accuracy")]
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red"]


def label(runner):
    if runner == "kaizen":
        return "Kaizen (upload + fine-tune job)"
    if runner.startswith("pytorch-w"):
        return f"PyTorch ImageFolder + DataLoader, {runner[len('pytorch-w'):]} workers"
    return runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="bench/runs/history/e2e_results.jsonl")
    parser.add_argument("--run_id", default="")
    parser.add_argument("--out", default="bench/e2e/e2e_learning_curves.png")
    args = parser.parse_args()
    rows, run_id = load_run(args.results, args.run_id,
                            keep=lambda r: r["rc"] == 0 and r.get("result"))
    runners = list(dict.fromkeys(r["runner"] for r in rows))
    first = rows[0]

    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.6))
    for color, runner in zip(COLORS, runners):
        rounds = [r["result"]["epochs"] for r in rows if r["runner"] == runner]
        for ax, (key, _) in zip(axes, PANELS):
            for epochs in rounds:
                pts = [(e["t"], e[key]) for e in epochs if e.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), color=color, alpha=0.25, linewidth=0.8)
            n = min(len(e) for e in rounds)
            med_pts = []
            for i in range(n):
                vals = [(ep[i]["t"], ep[i][key]) for ep in rounds if ep[i].get(key) is not None]
                if vals:
                    med_pts.append((statistics.median(v[0] for v in vals),
                                    statistics.median(v[1] for v in vals)))
            if med_pts:
                ax.plot(*zip(*med_pts), color=color, marker="o", linewidth=2,
                        label=label(runner))
    for ax, (key, title) in zip(axes, PANELS):
        ax.set_title(title)
        ax.set_xlabel("wall seconds since the user started")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].legend(fontsize=8)
    m = first["model"]
    fig.suptitle(
        f"Fine-tuning on an image folder: {first['images']} PNGs, {m['name']} "
        f"({m['parameters']:,} parameters), FULL, {first['epochs']} epochs, batch "
        f"{first['batch_size']}; {first['nproc']} cores, commit {first['commit']}, run {run_id}",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(rows)} runs of {run_id})")


if __name__ == "__main__":
    main()
