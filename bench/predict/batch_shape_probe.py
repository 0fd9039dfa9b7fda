#!/usr/bin/env python3
"""Does oneDNN prefer some batch sizes? (issue 18, item 3: Triton's
preferred_batch_size, padding a batch up to a size that runs faster.)

Debian's python3-torch is the LibTorch build kaizen-server links, so the
kernels are the ones serving runs. Each TorchScript model given is prepared
as serving prepares it (eval, torch.jit.freeze, optimize_for_inference,
inference mode) and timed at every batch size 1..MAX, in a new shuffled
order each round, for each intra-op thread count asked for. A size's time in
a round is the median of the calls made in MIN_SECONDS.

Padding a batch of b images up to b' > b only pays if t(b') < t(b). For each
b the script finds the b' >= b with the smallest median time and prints the
ratio t(b') / t(b) (1.00: b itself is the fastest), with the largest of that
ratio over the rounds: padding is called worth it at b only when every round
agrees (largest ratio < 1) and the median gain is at least THRESHOLD (5%).
The verdict line is computed from those numbers.

Usage: batch_shape_probe.py NAME=FILE.pt:C,H,W ... [--max_batch=32]
           [--rounds=3] [--threads=1,2] [--min_seconds=0.05] [--threshold=0.05]
"""
import argparse
import random
import statistics
import time

import torch


def prepare(path):
    module = torch.jit.load(path, map_location="cpu")
    module.eval()
    return torch.jit.optimize_for_inference(torch.jit.freeze(module))


def time_call(fn, min_seconds):
    fn()  # warm-up: TorchScript profiling runs, oneDNN primitive caches
    fn()
    times = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def probe(name, path, shape, threads, args, rng):
    module = prepare(path)
    sizes = list(range(1, args.max_batch + 1))
    inputs = {b: torch.rand(b, *shape) for b in sizes}
    rounds = []  # one {size: seconds} per round
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for _ in range(args.rounds):
            order = sizes[:]
            rng.shuffle(order)
            rounds.append({b: time_call(lambda: module(inputs[b]), args.min_seconds) for b in order})
    med = {b: statistics.median(r[b] for r in rounds) for b in sizes}
    rows, worth = [], []
    for b in sizes:
        best = min((bp for bp in sizes if bp >= b), key=lambda bp: med[bp])
        ratio = med[best] / med[b]
        worst = max(r[best] / r[b] for r in rounds)
        helps = best != b and worst < 1.0 and ratio <= 1.0 - args.threshold
        rows.append((b, med[b], best, ratio, worst, helps))
        if helps:
            worth.append((b, best, ratio))
    print(f"\n{name} ({'x'.join(map(str, shape))}), {threads} thread(s), {args.rounds} round(s)")
    print(f"{'batch':>5} {'ms':>9} {'ms/image':>9} {'fastest b>=':>11} {'t(b)/t(batch)':>14} "
          f"{'worst round':>11}")
    for b, t, best, ratio, worst, helps in rows:
        print(f"{b:>5} {1e3 * t:>9.2f} {1e3 * t / b:>9.3f} {best:>11} {ratio:>14.2f} {worst:>11.2f}"
              f"{'  pad' if helps else ''}")
    if worth:
        where = ", ".join(f"{b}->{bp} ({r:.2f}x)" for b, bp, r in worth)
        print(f"verdict {name} {threads}t: padding pays at {len(worth)} of {len(sizes)} sizes: {where}")
    else:
        biggest = min(rows, key=lambda row: row[3])
        print(f"verdict {name} {threads}t: no preferred batch sizes: no b' > b ran faster than b "
              f"in every round by {100 * args.threshold:.0f}% or more (best median "
              f"t(b')/t(b) {biggest[3]:.2f} at b={biggest[0]}->{biggest[2]})")
    return worth


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="NAME=FILE.pt:C,H,W")
    p.add_argument("--max_batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--min_seconds", type=float, default=0.05)
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    print(f"torch {torch.__version__}; batch sizes 1..{args.max_batch}; "
          f"min {args.min_seconds}s a size a round; padding threshold {100 * args.threshold:.0f}%")
    any_worth = False
    for spec in args.models:
        name, rest = spec.split("=", 1)
        path, dims = rest.rsplit(":", 1)
        shape = [int(d) for d in dims.split(",")]
        for threads in [int(t) for t in args.threads.split(",")]:
            any_worth = bool(probe(name, path, shape, threads, args, rng)) or any_worth
    print("\nverdict: " + ("some batch sizes are worth padding to (see above)" if any_worth else
                         "oneDNN prefers no batch sizes here: no padding paid in every round"))


if __name__ == "__main__":
    main()
