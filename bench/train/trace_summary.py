#!/usr/bin/python3
"""Ranks the ops of a LibTorch profiler trace by self time.

Reads the Chrome trace that `kaizen_train_bench --profile_trace=PATH` writes
(or torch.autograd.profiler's export_chrome_trace) and prints, per op name,
calls, self time (its own time minus the ops nested in it) and share.

Usage: trace_summary.py TRACE.json [--top 25]
"""

import argparse
import collections
import json
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--skip", type=float, default=0.0,
                   help="ignore ops that start in this leading fraction of the trace "
                        "(e.g. 0.67 keeps the last of three equal epochs)")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps in the kept part: adds a per-step column")
    args = p.parse_args()
    with open(args.trace) as f:
        text = f.read().strip()
    # The legacy profiler may leave a trailing comma before the closing bracket.
    if text.endswith(",]"):
        text = text[:-2] + "]"
    events = json.loads(text)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if spans and args.skip > 0:
        first = min(float(e["ts"]) for e in spans)
        last = max(float(e["ts"]) + float(e["dur"]) for e in spans)
        cut = first + args.skip * (last - first)
        spans = [e for e in spans if float(e["ts"]) >= cut]
    by_thread = collections.defaultdict(list)
    for e in spans:
        by_thread[e.get("tid")].append(e)
    self_time = collections.Counter()
    calls = collections.Counter()
    total = 0.0
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child_time]
        def pop():
            end, name, child, dur = stack.pop()
            self_time[name] += dur - child
        for e in evs:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= start:
                pop()
            if stack:
                stack[-1][2] += dur
            else:
                total += dur
            stack.append([start + dur, e["name"], 0.0, dur])
            calls[e["name"]] += 1
        while stack:
            pop()
    if total <= 0:
        print("no events", file=sys.stderr)
        return 1
    print(f"top-level op time: {total / 1e6:.3f} s")
    per = args.steps if args.steps > 0 else 0
    head = f"{'op':60s} {'calls':>7s} {'self s':>9s} {'share':>7s}"
    print(head + (f" {'ms/step':>8s} {'calls/step':>10s}" if per else ""))
    for name, t in self_time.most_common(args.top):
        line = f"{name[:60]:60s} {calls[name]:7d} {t / 1e6:9.3f} {100 * t / total:6.1f}%"
        if per:
            line += f" {t / 1e3 / per:8.2f} {calls[name] / per:10.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
