#!/usr/bin/python3
"""Plots bench/predict/predict_bench.sh results: throughput and p99 latency against
concurrency for Kaizen with batching on, Kaizen with batching off and the
one-request-at-a-time Python server. Lines are medians over rounds; the
shaded bands span the fastest and slowest round.

  /usr/bin/python3 bench/predict/predict_plot.py [bench/runs/history/predict_results.jsonl]
      [--run_id=ID (default: the last run in the file)] [--out=FILE.png]
"""

import argparse
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from results_file import load_run  # noqa: E402

CONFIGS = [
    ("kaizen-on", "Kaizen, batching on", "tab:blue"),
    ("kaizen-off", "Kaizen, batching off", "tab:orange"),
    ("python", "Python, one at a time", "tab:green"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="bench/runs/history/predict_results.jsonl")
    parser.add_argument("--run_id", help="default: the last run in the file")
    parser.add_argument("--out", help="default: RESULTS with .png for .jsonl")
    args = parser.parse_args()

    rows, run_id = load_run(args.results, args.run_id)
    out = args.out or args.results.rsplit(".", 1)[0] + ".png"

    fig, (ax_tp, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for config, label, color in CONFIGS:
        by_c = {}
        for r in rows:
            if r["config"] == config:
                res = r["result"]
                by_c.setdefault(r["concurrency"], []).append(
                    (res["requests_per_second"], res["latency_ms"]["p99"]))
        if not by_c:
            continue
        cs = sorted(by_c)
        for ax, k in ((ax_tp, 0), (ax_p99, 1)):
            values = [[v[k] for v in by_c[c]] for c in cs]
            ax.plot(cs, [statistics.median(v) for v in values], "o-",
                    color=color, label=label)
            ax.fill_between(cs, [min(v) for v in values],
                            [max(v) for v in values], color=color, alpha=0.15)

    first = rows[0]
    m = first["model"]
    for ax in (ax_tp, ax_p99):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent requests (1 input each)")
        ax.grid(True, which="both", alpha=0.3)
    ax_tp.set_ylabel("requests / s")
    ax_tp.set_ylim(bottom=0)
    ax_tp.set_title("throughput")
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 latency (ms)")
    ax_p99.set_title("p99 latency")
    ax_tp.legend()
    fig.suptitle(
        f"{m['architecture']} ({m['parameters']:,} params, input "
        f"{'x'.join(map(str, m['input_shape']))}), {first['input']} inputs; "
        f"{first['nproc']} x {first['cpu_model']}, {first['threads']} threads; "
        f"commit {first['commit']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out} (run {run_id}, {len(rows)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
