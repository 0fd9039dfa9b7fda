#!/usr/bin/env python3
"""channels_last against the default (contiguous) memory format, side by side.

Issue 18, item 5. Debian's python3-torch is the same LibTorch build that
kaizen-server links (libtorch_cpu.so from the same source package), so its
oneDNN kernels are the ones Kaizen's trainer and serving would run. For each
TorchScript model given (the built-ins as `kaizen_train_bench --save_model`
writes them, torchvision's resnet18 as tests/fixtures/export_resnet18.py
does) it times, in both memory formats, interleaved round by round:

  train: one SGD step (forward, cross-entropy, backward, update) at the
         training batch, every parameter training (FULL), and with only the
         last block and the head training (FINE_TUNE-like, when --fine_tune
         names the block);
  infer: the module as serving runs it (frozen, optimize_for_inference,
         inference mode) at batch 1 and at the serving batch limit (32).

It prints the median seconds per call over ROUNDS rounds and the ratio
contiguous / channels_last (> 1: channels_last is faster).

Usage: memory_format_probe.py NAME=FILE.pt:C,H,W[:BLOCK] ... [--rounds=5] [--threads=2]
"""
import argparse
import statistics
import time

import torch


def timed(fn, seconds):
    fn()  # warm-up (TorchScript profiling runs, oneDNN primitive caches)
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def to_format(module, fmt):
    for p in module.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=fmt)
    return module


def probe(name, path, shape, block, args):
    results = {}
    for rnd in range(args.rounds):
        order = [torch.contiguous_format, torch.channels_last]
        if rnd % 2:
            order.reverse()
        for fmt in order:
            label = "channels_last" if fmt == torch.channels_last else "contiguous"
            m = to_format(torch.jit.load(path), fmt)
            x = torch.rand(args.train_batch, *shape).contiguous(memory_format=fmt)
            y = torch.randint(0, 10, (args.train_batch,))

            def step(params):
                opt = torch.optim.SGD(params, lr=1e-3)

                def run():
                    opt.zero_grad(set_to_none=True)
                    out = m(x)
                    torch.nn.functional.cross_entropy(out[:, :10], y).backward()
                    opt.step()

                return run

            m.train()
            top = lambda n: n.startswith(block + ".") or n.startswith("fc.")
            cases = {"train full": (step(list(m.parameters())), lambda n: True)}
            if block:
                trainable = [p for n, p in m.named_parameters() if top(n)]
                cases[f"train {block}+fc"] = (step(trainable), top)
            for case, (fn, trains) in cases.items():
                for n, p in m.named_parameters():
                    p.requires_grad_(trains(n))
                results.setdefault((case, label), []).append(timed(fn, args.seconds))
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            # As serving runs it: frozen, optimize_for_inference (CPU),
            # inference mode.
            served = torch.jit.optimize_for_inference(torch.jit.freeze(m))
            with torch.inference_mode():
                for batch in (1, args.serve_batch):
                    xi = torch.rand(batch, *shape).contiguous(memory_format=fmt)
                    results.setdefault((f"infer batch {batch}", label), []).append(
                        timed(lambda: served(xi), args.seconds))
    cases = sorted({c for c, _ in results}, key=lambda c: (not c.startswith("train"), c))
    for case in cases:
        a = statistics.median(results[(case, "contiguous")])
        b = statistics.median(results[(case, "channels_last")])
        print(f"{name:<14}{case:<24}{a * 1000:>14.2f}{b * 1000:>17.2f}{a / b:>10.3f}x", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train_batch", type=int, default=64)
    ap.add_argument("--serve_batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds of "
          f"{args.seconds:g} s, train batch {args.train_batch}, serving batch {args.serve_batch}")
    print(f"{'model':<14}{'case':<24}{'contiguous ms':>14}{'channels_last ms':>17}{'ratio':>11}")
    for spec in args.models:
        name, rest = spec.split("=", 1)
        parts = rest.split(":")
        shape = tuple(int(v) for v in parts[1].split(","))
        probe(name, parts[0], shape, parts[2] if len(parts) > 2 else "", args)


if __name__ == "__main__":
    main()
