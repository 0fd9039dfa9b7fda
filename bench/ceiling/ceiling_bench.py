#!/usr/bin/python3
"""The hardware ceiling and the trainer's share of it (bench/ceiling/ceiling_bench.sh).

Subcommands, each printing JSON lines on stdout:

  matmul --threads T --sizes 512,1024,2048 [--min_seconds 1.0]
      Dense float32 torch.mm GFLOP/s (2*n^3 flops per product) at each size,
      torch.set_num_threads(T): one warm-up product, then products in a loop
      until --min_seconds have passed; one line per size. ceiling_bench.sh
      calls it once per round, so the median is over rounds.

  flops --model PATH.pt [--input_shape 1,28,28] [--batch 4]
      Multiply-adds per image of every convolution and linear layer of a
      TorchScript model (the one `kaizen_train_bench --save_model=PATH
      --prepare_only` writes). Counted from the aten calls themselves: a
      TorchDispatchMode sees every aten::convolution / addmm / mm / bmm the
      TorchScript interpreter runs, with the real shapes (MACs =
      output elements x input channels per group x kernel area, M*N*K for
      products). Forward in eval mode; then forward + backward in train mode,
      counting aten::convolution_backward by its output mask (grad_input and
      grad_weight each cost the forward's MACs) and the products of the linear
      layers' backward. FLOPs = 2 x MACs. The training estimate used for the
      ratio is 3 x forward (the usual rule: backward = 2 x forward); the
      counted forward + backward is reported beside it (a little lower: the
      first convolution needs no grad_input). Cross-check: torch.profiler with
      record_shapes=True, with_flops=True on the same forward of a freshly
      loaded copy (its conv2d / mm / addmm events). Batch norm, ReLU, pooling
      and residual adds are not counted (a few percent of the convolutions'
      FLOPs at most).

  summarize RUN_DIR
      Reads RUN_DIR/matmul-rN.jsonl, RUN_DIR/trainer-rN.jsonl (kaizen_train_bench
      output), RUN_DIR/flops.json and RUN_DIR/meta.json; prints the table and
      writes RUN_DIR/results.jsonl (one line per measurement and a summary
      line) for ceiling_bench.sh to append to $CEILING_RESULTS.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys
import time


def cmd_matmul(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        a = torch.randn(n, n, dtype=torch.float32)
        b = torch.randn(n, n, dtype=torch.float32)
        c = torch.empty(n, n, dtype=torch.float32)
        torch.mm(a, b, out=c)  # warm-up: BLAS thread pool, page faults of c
        count = 0
        start = time.monotonic()
        while True:
            torch.mm(a, b, out=c)
            count += 1
            elapsed = time.monotonic() - start
            if elapsed >= args.min_seconds:
                break
        gflops = 2.0 * n ** 3 * count / elapsed / 1e9
        print(json.dumps({"kind": "matmul", "n": n, "threads": torch.get_num_threads(),
                          "products": count, "seconds": round(elapsed, 4),
                          "gflops": round(gflops, 3),
                          "loadavg": round(os.getloadavg()[0], 2)}), flush=True)


def _numel(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def count_macs(model, x, backward):
    """Runs model(x) (and backward if asked) and returns {op: MACs}."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    macs = {}

    def add(key, value):
        macs[key] = macs.get(key, 0) + int(value)

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name == "convolution":
                weight = args[1]
                if not args[6]:  # not transposed
                    add("conv_forward", out.numel() * _numel(weight.shape[1:]))
            elif name == "convolution_backward":
                grad_out, weight, mask = args[0], args[2], args[10]
                per = grad_out.numel() * _numel(weight.shape[1:])
                if mask[0]:
                    add("conv_grad_input", per)
                if mask[1]:
                    add("conv_grad_weight", per)
            elif name in ("mm", "addmm"):
                m1, m2 = (args[0], args[1]) if name == "mm" else (args[1], args[2])
                add(name, m1.shape[0] * m1.shape[1] * m2.shape[1])
            elif name in ("bmm", "baddbmm"):
                b1, b2 = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
                add(name, b1.shape[0] * b1.shape[1] * b1.shape[2] * b2.shape[2])
            elif name == "linear":  # if it ever arrives undecomposed
                add("linear", out.numel() * args[1].shape[1])
            return out

    with torch.jit.optimized_execution(False), Counter():
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if backward:
            out.float().sum().backward()
    return macs


def cmd_flops(args):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = [int(s) for s in args.input_shape.split(",")]
    model = torch.jit.load(args.model, map_location="cpu")
    x = torch.randn(args.batch, *shape)

    model.eval()
    with torch.no_grad():
        fwd = count_macs(model, x, backward=False)
    forward_macs = sum(fwd.values()) / args.batch

    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    train = count_macs(model, x, backward=True)
    train_macs = sum(train.values()) / args.batch
    backward_counted = any(k.startswith("conv_grad") for k in train)

    # Cross-check with the profiler's own FLOP formulas (its conv2d / mm /
    # addmm events; other events carry elementwise FLOPs we do not count).
    profiler_flops = None
    profiler_note = ""
    try:
        from torch.profiler import ProfilerActivity, profile

        # A fresh copy, warmed up by two calls: on the model that ran under
        # the dispatch mode above, the profiler saw the convolutions' inputs
        # as non-tensors ("Failed to save extra arguments for flops
        # computation") and recorded no FLOPs for them.
        fresh = torch.jit.load(args.model, map_location="cpu")
        fresh.eval()
        with torch.no_grad():
            fresh(x)
            fresh(x)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                         with_flops=True) as prof:
                fresh(x)
        by_op = {}
        for e in prof.key_averages():
            if e.flops:
                by_op[e.key] = by_op.get(e.key, 0) + e.flops
        matmul_like = {k: v for k, v in by_op.items()
                       if k in ("aten::conv2d", "aten::mm", "aten::addmm", "aten::bmm",
                                "aten::matmul", "aten::linear")}
        profiler_flops = sum(matmul_like.values()) / args.batch
        profiler_note = ", ".join(f"{k} {v / args.batch / 1e6:.2f}M" for k, v in sorted(by_op.items()))
    except Exception as e:  # the count above does not depend on it
        profiler_note = f"profiler failed: {e}"

    print(json.dumps({
        "kind": "flops", "model_file": os.path.basename(args.model), "input_shape": shape,
        "method": "TorchDispatchMode count of aten convolution/addmm/mm/bmm (MACs x 2)",
        "forward_macs_per_image": forward_macs,
        "forward_flops_per_image": 2 * forward_macs,
        "training_flops_per_image": 3 * 2 * forward_macs,
        "training_rule": "3 x forward",
        "counted_forward_backward_flops_per_image": 2 * train_macs if backward_counted else None,
        "forward_macs_by_op": {k: v / args.batch for k, v in fwd.items()},
        "train_macs_by_op": {k: v / args.batch for k, v in train.items()},
        "profiler_forward_flops_per_image": profiler_flops,
        "profiler_flops_by_op": profiler_note,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }))


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def cmd_summarize(args):
    d = args.run_dir
    meta = json.load(open(os.path.join(d, "meta.json")))
    flops = json.load(open(os.path.join(d, "flops.json")))
    train_flops = flops["training_flops_per_image"]
    matmul = {}   # round -> {n: gflops}
    rows = []
    for path in sorted(glob.glob(os.path.join(d, "matmul-r*.jsonl"))):
        r = int(re.search(r"-r(\d+)\.jsonl$", path).group(1))
        for line in open(path):
            if line.strip():
                m = json.loads(line)
                matmul.setdefault(r, {})[m["n"]] = m["gflops"]
                rows.append(dict(m, round=r))
    trainer = {}  # round -> median images/s of epochs after the first
    for path in sorted(glob.glob(os.path.join(d, "trainer-r*.jsonl"))):
        r = int(re.search(r"-r(\d+)\.jsonl$", path).group(1))
        epochs = []
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                e = json.loads(line)
                if "epoch" in e and e.get("side") == "cpp":
                    epochs.append(e)
        later = [e for e in epochs if e["epoch"] > args.warmup_epochs] or epochs
        if not later:
            continue
        ips = _median([e["images_per_second"] for e in later])
        trainer[r] = ips
        rows.append({"kind": "trainer", "round": r, "images_per_second": round(ips, 3),
                     "epochs_used": [e["epoch"] for e in later],
                     "model_gflops": round(ips * train_flops / 1e9, 3)})

    sizes = sorted({n for v in matmul.values() for n in v})
    med = {n: _median([v[n] for v in matmul.values() if n in v]) for n in sizes}
    best = max(sizes, key=lambda n: med[n]) if sizes else None
    ips_med = _median(list(trainer.values()))
    model_gflops = ips_med * train_flops / 1e9
    # Per-round share (trainer and matmul of the same round, under about the
    # same load), median over rounds.
    shares = [trainer[r] * train_flops / 1e9 / matmul[r][best]
              for r in trainer if r in matmul and best in matmul[r] and matmul[r][best] > 0]
    share = _median(shares)

    print(f"\nmachine: {meta['nproc']} cores, {meta['cpu_model']}; torch {meta['torch']} "
          f"(matmul), libtorch {meta['libtorch']} (trainer); BLAS {meta['blas']}")
    print(f"threads {meta['threads']}; OMP_WAIT_POLICY={meta['omp_wait_policy']}; "
          f"{meta['rounds']} round(s); load {meta['loadavg']}; commit {meta['commit']}")
    print(f"\n{'dense float32 torch.mm':<34}{'GFLOP/s (median)':>18}{'range':>20}")
    for n in sizes:
        vals = [v[n] for v in matmul.values() if n in v]
        print(f"{'  n = %d' % n:<34}{med[n]:>18.2f}{'%.2f-%.2f' % (min(vals), max(vals)):>20}")
    print(f"\n{meta['model']} at {'x'.join(map(str, flops['input_shape']))}: "
          f"forward {flops['forward_flops_per_image'] / 1e6:.2f} MFLOP/image "
          f"({flops['forward_macs_per_image'] / 1e6:.2f} M multiply-adds, conv + linear)")
    prof = flops.get("profiler_forward_flops_per_image")
    if prof:
        print(f"  profiler cross-check (conv2d/mm/addmm events): {prof / 1e6:.2f} MFLOP/image")
    counted = flops.get("counted_forward_backward_flops_per_image")
    print(f"  training = 3 x forward: {train_flops / 1e6:.2f} MFLOP/image"
          + (f" (counted forward+backward: {counted / 1e6:.2f})" if counted else ""))
    print(f"\n{'trainer (kaizen_train_bench --strategy=full)':<46}{'median':>12}")
    print(f"{'  images/s (epochs after the first)':<46}{ips_med:>12.1f}")
    print(f"{'  model GFLOP/s (images/s x training FLOPs)':<46}{model_gflops:>12.2f}")
    if best is not None:
        print(f"{'  share of the matmul ceiling (n = %d)' % best:<46}{100 * share:>11.1f}%")
        print(f"  (median of per-round shares; the ceiling is the size with the highest median, "
              f"{med[best]:.2f} GFLOP/s)")

    summary = {
        "kind": "summary", "matmul_gflops_median": {str(n): round(med[n], 3) for n in sizes},
        "ceiling_n": best, "ceiling_gflops": round(med[best], 3) if best else None,
        "trainer_images_per_second": round(ips_med, 3),
        "forward_flops_per_image": flops["forward_flops_per_image"],
        "training_flops_per_image": train_flops,
        "counted_forward_backward_flops_per_image": counted,
        "profiler_forward_flops_per_image": prof,
        "model_gflops": round(model_gflops, 3), "share_of_ceiling": round(share, 4),
        "per_round_shares": [round(s, 4) for s in shares],
    }
    with open(os.path.join(d, "results.jsonl"), "w") as out:
        for row in rows + [dict(flops), summary]:
            base = {k: meta[k] for k in ("run_id", "date", "commit", "nproc", "cpu_model",
                                         "torch", "libtorch", "blas", "threads",
                                         "omp_wait_policy", "model", "images", "epochs",
                                         "batch_size", "min_seconds")}
            base["loadavg"] = row.pop("loadavg", meta["loadavg"])
            out.write(json.dumps(dict(base, **row)) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("matmul")
    m.add_argument("--threads", type=int, default=os.cpu_count())
    m.add_argument("--sizes", default="512,1024,2048")
    m.add_argument("--min_seconds", type=float, default=1.0)
    f = sub.add_parser("flops")
    f.add_argument("--model", required=True)
    f.add_argument("--input_shape", default="1,28,28")
    f.add_argument("--batch", type=int, default=4)
    s = sub.add_parser("summarize")
    s.add_argument("run_dir")
    s.add_argument("--warmup_epochs", type=int, default=1)
    args = p.parse_args()
    {"matmul": cmd_matmul, "flops": cmd_flops, "summarize": cmd_summarize}[args.cmd](args)


if __name__ == "__main__":
    main()
