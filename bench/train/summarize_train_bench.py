#!/usr/bin/python3
"""Summarises the runs of train_throughput.sh into a Markdown table.

Reads RUN_DIR/<bench>-r<repeat>.jsonl (the JSON lines that kaizen_train_bench
and train_bench.py print) and RUN_DIR/load.tsv (bench, repeat, 1-minute load
before the run), and prints medians over repeats and the ratios the training
issue asks for. Only epochs after the first count (the first one pays for
TorchScript's profiling runs, allocator warm-up and, with the cache, for
building it).

Usage: summarize_train_bench.py RUN_DIR [--warmup_epochs 1]
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys


def read_runs(run_dir):
    runs = {}  # bench -> {repeat: [epoch records]}
    for path in sorted(glob.glob(os.path.join(run_dir, "*-r*.jsonl"))):
        m = re.match(r"(.+)-r(\d+)\.jsonl$", os.path.basename(path))
        if not m:
            continue
        epochs = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                if "epoch" in rec and "event" not in rec:
                    epochs.append(rec)
        runs.setdefault(m.group(1), {})[int(m.group(2))] = epochs
    return runs


def read_load(run_dir):
    loads = {}
    path = os.path.join(run_dir, "load.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    loads.setdefault(parts[0], []).append(float(parts[2]))
    return loads


def after_warmup(epochs, warmup):
    late = [e for e in epochs if e["epoch"] > warmup]
    return late


def throughput(epochs, key="seconds"):
    """Images per second over the given epochs (total images / total time)."""
    images = sum(e["images_per_second"] * e["seconds"] for e in epochs)
    seconds = sum(e[key] for e in epochs)
    return images / seconds if seconds > 0 else float("nan")


def per_epoch(epochs, key="seconds"):
    return statistics.mean(e[key] for e in epochs) if epochs else float("nan")


def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def spread(values):
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return f"{min(values):.3g}–{max(values):.3g}"


def paired(a, b, fn):
    """fn(a[r], b[r]) for every repeat r both have."""
    return [fn(a[r], b[r]) for r in sorted(set(a) & set(b))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--warmup_epochs", type=int, default=1)
    args = p.parse_args()
    runs = read_runs(args.run_dir)
    loads = read_load(args.run_dir)
    w = args.warmup_epochs
    out = []
    verdicts = []

    full_cpp = {r: throughput(after_warmup(e, w)) for r, e in runs.get("full-cpp", {}).items()}
    full_cpp_wall = {r: throughput(after_warmup(e, w), "wall_seconds")
                     for r, e in runs.get("full-cpp", {}).items()}
    full_py = {r: throughput(after_warmup(e, w)) for r, e in runs.get("full-python", {}).items()}
    full_plain = {r: throughput(after_warmup(e, w))
                  for r, e in runs.get("full-cpp-plain", {}).items()}
    full_noopt = {r: throughput(after_warmup(e, w), "wall_seconds")
                  for r, e in runs.get("full-cpp-noopt", {}).items()}
    full_malloc = {r: throughput(after_warmup(e, w), "wall_seconds")
                   for r, e in runs.get("full-cpp-malloc", {}).items()}
    # Images per CPU-second (all threads): less sensitive to other people's
    # load than wall time, though OpenMP spinning still counts.
    cpu = {name: {r: throughput(after_warmup(e, w), "cpu_seconds") for r, e in runs.get(name, {}).items()
                  if all("cpu_seconds" in x for x in e)}
           for name in ("full-cpp", "full-cpp-plain", "full-cpp-noopt", "full-cpp-malloc",
                         "full-python")}
    if full_cpp and full_py:
        out.append(f"### STRATEGY_FULL: images/s, epochs > {w} (median over repeats, range)\n")
        out.append("| runner | images/s | range | images/CPU-s | repeats |")
        out.append("|---|---:|---|---:|---:|")

        def cpu_cell(name):
            c = cpu.get(name, {})
            return f"{med(c.values()):.1f}" if c else "–"

        out.append(f"| C++ trainer (training loop, EpochMetrics) | {med(full_cpp.values()):.1f} | "
                   f"{spread(full_cpp.values())} | – | {len(full_cpp)} |")
        out.append(f"| C++ trainer (wall, incl. per-epoch checkpoint) | "
                   f"{med(full_cpp_wall.values()):.1f} | {spread(full_cpp_wall.values())} | "
                   f"{cpu_cell('full-cpp')} | {len(full_cpp_wall)} |")
        if full_plain:
            out.append(f"| C++ plain libtorch loop (no trainer) | {med(full_plain.values()):.1f} | "
                       f"{spread(full_plain.values())} | {cpu_cell('full-cpp-plain')} | "
                       f"{len(full_plain)} |")
        if full_noopt:
            out.append(f"| C++ trainer, graph-executor optimisation off (wall) | "
                       f"{med(full_noopt.values()):.1f} | {spread(full_noopt.values())} | "
                       f"{cpu_cell('full-cpp-noopt')} | {len(full_noopt)} |")
        if full_malloc:
            out.append(f"| C++ trainer, malloc keeps large blocks (wall) | "
                       f"{med(full_malloc.values()):.1f} | {spread(full_malloc.values())} | "
                       f"{cpu_cell('full-cpp-malloc')} | {len(full_malloc)} |")
        out.append(f"| PyTorch Python loop | {med(full_py.values()):.1f} | "
                   f"{spread(full_py.values())} | {cpu_cell('full-python')} | {len(full_py)} |")
        ratios = paired(full_cpp, full_py, lambda a, b: a / b)
        wall_ratios = paired(full_cpp_wall, full_py, lambda a, b: a / b)
        ratio_of_medians = med(full_cpp.values()) / med(full_py.values())
        out.append("")
        out.append(f"- C++/Python, median of per-repeat ratios: **{med(ratios):.2f}x** "
                   f"(range {spread(ratios)}); ratio of medians {ratio_of_medians:.2f}x; "
                   f"with the checkpoint in the C++ time {med(wall_ratios):.2f}x.")
        if cpu["full-cpp"] and cpu["full-python"]:
            cpu_ratios = paired(cpu["full-cpp"], cpu["full-python"], lambda a, b: a / b)
            out.append(f"- C++/Python in images per CPU-second: {med(cpu_ratios):.2f}x "
                       f"(range {spread(cpu_ratios)}).")
        if full_noopt:
            noopt_ratios = paired(full_noopt, full_py, lambda a, b: a / b)
            noopt_vs_cpp = paired(full_noopt, full_cpp_wall, lambda a, b: a / b)
            out.append(f"- C++ trainer with graph-executor optimisation off / Python: "
                       f"{med(noopt_ratios):.2f}x (range {spread(noopt_ratios)}); vs the "
                       f"trainer as is: {med(noopt_vs_cpp):.2f}x.")
        if full_malloc:
            m_ratios = paired(full_malloc, full_py, lambda a, b: a / b)
            m_vs_cpp = paired(full_malloc, full_cpp_wall, lambda a, b: a / b)
            out.append(f"- C++ trainer with malloc tuning / Python: {med(m_ratios):.2f}x "
                       f"(range {spread(m_ratios)}); vs the trainer as is: {med(m_vs_cpp):.2f}x.")
        if full_plain:
            plain_ratios = paired(full_plain, full_py, lambda a, b: a / b)
            out.append(f"- C++ plain loop/Python: {med(plain_ratios):.2f}x "
                       f"(range {spread(plain_ratios)}).")
        ok = med(ratios) >= 1.2
        verdicts.append(f"FULL C++/Python = {med(ratios):.2f}x (target >= 1.2x): "
                        f"{'PASS' if ok else 'FAIL'}")
        out.append("")

    ft_cpp = {r: throughput(after_warmup(e, w)) for r, e in runs.get("ft-cpp", {}).items()}
    ft_cpp_wall = {r: throughput(after_warmup(e, w), "wall_seconds")
                   for r, e in runs.get("ft-cpp", {}).items()}
    ft_py = {r: throughput(after_warmup(e, w)) for r, e in runs.get("ft-python", {}).items()}
    if ft_cpp and ft_py:
        ft_cpu = {name: {r: throughput(after_warmup(e, w), "cpu_seconds")
                         for r, e in runs.get(name, {}).items()}
                  for name in ("ft-cpp", "ft-python")}
        last_loss = {name: med([e[-1]["train_loss"] for e in runs.get(name, {}).values() if e])
                     for name in ("ft-cpp", "ft-python")}
        out.append(f"### STRATEGY_FINE_TUNE (top block + head): images/s, epochs > {w} "
                   f"(median over repeats, range)\n")
        out.append("| runner | images/s | range | images/CPU-s | last-epoch train loss | repeats |")
        out.append("|---|---:|---|---:|---:|---:|")
        out.append(f"| C++ trainer (training loop, EpochMetrics) | {med(ft_cpp.values()):.1f} | "
                   f"{spread(ft_cpp.values())} | – | {last_loss['ft-cpp']:.3f} | {len(ft_cpp)} |")
        out.append(f"| C++ trainer (wall, incl. per-epoch checkpoint) | "
                   f"{med(ft_cpp_wall.values()):.1f} | {spread(ft_cpp_wall.values())} | "
                   f"{med(ft_cpu['ft-cpp'].values()):.1f} | | {len(ft_cpp_wall)} |")
        out.append(f"| PyTorch Python loop | {med(ft_py.values()):.1f} | {spread(ft_py.values())} | "
                   f"{med(ft_cpu['ft-python'].values()):.1f} | {last_loss['ft-python']:.3f} | "
                   f"{len(ft_py)} |")
        ratios = paired(ft_cpp, ft_py, lambda a, b: a / b)
        wall_ratios = paired(ft_cpp_wall, ft_py, lambda a, b: a / b)
        cpu_ratios = paired(ft_cpu["ft-cpp"], ft_cpu["ft-python"], lambda a, b: a / b)
        out.append("")
        out.append(f"- C++/Python, median of per-repeat ratios: **{med(ratios):.2f}x** "
                   f"(range {spread(ratios)}); with the checkpoint in the C++ time "
                   f"{med(wall_ratios):.2f}x; in images per CPU-second {med(cpu_ratios):.2f}x.")
        verdicts.append(f"FINE_TUNE C++/Python = {med(ratios):.2f}x (reported; no target)")
        out.append("")

    cached = runs.get("fe-cpp-cache", {})
    uncached = runs.get("fe-cpp-nocache", {})
    fe_py = runs.get("fe-python", {})
    if cached and uncached:
        c_sec = {r: per_epoch(after_warmup(e, w)) for r, e in cached.items()}
        c_wall = {r: per_epoch(after_warmup(e, w), "wall_seconds") for r, e in cached.items()}
        c_first = {r: e[0]["wall_seconds"] for r, e in cached.items() if e}
        u_sec = {r: per_epoch(after_warmup(e, w)) for r, e in uncached.items()}
        u_wall = {r: per_epoch(after_warmup(e, w), "wall_seconds") for r, e in uncached.items()}
        out.append(f"### STRATEGY_FEATURE_EXTRACTION (augmentation off): seconds per epoch, "
                   f"epochs > {w} (median over repeats, range)\n")
        out.append("| runner | s/epoch (training loop) | s/epoch (wall, incl. checkpoint) | "
                   "repeats |")
        out.append("|---|---:|---:|---:|")
        out.append(f"| C++ trainer, feature cache | {med(c_sec.values()):.4f} "
                   f"({spread(c_sec.values())}) | {med(c_wall.values()):.4f} "
                   f"({spread(c_wall.values())}) | {len(c_sec)} |")
        out.append(f"| C++ trainer, cache off | {med(u_sec.values()):.3f} "
                   f"({spread(u_sec.values())}) | {med(u_wall.values()):.3f} "
                   f"({spread(u_wall.values())}) | {len(u_sec)} |")
        if fe_py:
            p_sec = {r: per_epoch(after_warmup(e, w)) for r, e in fe_py.items()}
            out.append(f"| PyTorch Python loop, frozen backbone, no cache | "
                       f"{med(p_sec.values()):.3f} ({spread(p_sec.values())}) | – | {len(p_sec)} |")
        speed = paired(u_sec, c_sec, lambda a, b: a / b)
        speed_wall = paired(u_wall, c_wall, lambda a, b: a / b)
        out.append("")
        out.append(f"- Cache speed-up per epoch after the first (uncached/cached, median of "
                   f"per-repeat ratios): **{med(speed):.0f}x** on the training loop "
                   f"(range {spread(speed)}), **{med(speed_wall):.0f}x** on wall time incl. the "
                   f"per-epoch checkpoint (range {spread(speed_wall)}).")
        if fe_py:
            p_speed = paired(p_sec, c_wall, lambda a, b: a / b)
            out.append(f"- Python uncached / C++ cached (wall): {med(p_speed):.0f}x.")
        out.append(f"- First epoch with the cache (builds it; wall): {med(c_first.values()):.2f} s.")
        ok = med(speed_wall) >= 10
        verdicts.append(f"FE cache speed-up = {med(speed_wall):.0f}x wall / {med(speed):.0f}x loop "
                        f"(target >= 10x): {'PASS' if ok else 'FAIL'}")
        out.append("")

    if loads:
        all_loads = [v for vs in loads.values() for v in vs]
        out.append(f"1-minute load average before each run: median {med(all_loads):.2f}, "
                   f"range {spread(all_loads)} (2 cores).")
        out.append("")
    out.extend(f"**{v}**" for v in verdicts)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
