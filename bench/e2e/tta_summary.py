#!/usr/bin/python3
"""Summarises bench/e2e/time_to_accuracy.sh's runs (its JSON lines).

Each comparison is one Kaizen runner against one PyTorch runner, round by
round: the target of a round is the lower of the two runners' best test
accuracies, so both reach it, and a runner's time to accuracy is the time of
its first model at or above it. Prints per strategy each runner's median best
accuracy and time for all epochs, then per pair the medians of the target and
of both times, and the median of the per-round ratios PyTorch / Kaizen, with
the verdict against the issue's goal for Kaizen's defaults (`kaizen`).

Usage: tta_summary.py RUNS.jsonl
"""
import json
import statistics
import sys

GOALS = {"feature_extraction": 3.0, "fine_tune": 1.5}


def time_to(points, target):
    """Seconds to the first model at or above TARGET (None when never)."""
    for p in sorted(points, key=lambda p: p["t"]):
        if p["test_accuracy"] >= target:
            return p["t"]
    return None


def best(run):
    return max(p["test_accuracy"] for p in run["points"])


def rounds_by_strategy(rows):
    """{strategy: {round: {runner: run}}} of the runs that ended well."""
    out = {}
    for r in rows:
        if r["rc"] == 0 and r["points"]:
            out.setdefault(r["strategy"], {}).setdefault(r["round"], {})[r["runner"]] = r
    return out


def compare(rounds, ours, theirs):
    """Per round with both runners: (target, our time, their time)."""
    out = []
    for runners in rounds.values():
        if ours in runners and theirs in runners:
            target = min(best(runners[ours]), best(runners[theirs]))
            out.append((target, time_to(runners[ours]["points"], target),
                        time_to(runners[theirs]["points"], target)))
    return out


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    if not rows:
        sys.exit("tta_summary: no runs")
    first = rows[0]
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"\nTime to accuracy {first['run_id']}: {first['train_images']} training PNGs "
          f"(Fashion-MNIST classes 5-9), scored on {first['test_images']} test PNGs of the same "
          f"classes, {first['epochs']} epochs each; base: {first['base']}")
    print(f"machine: {first['nproc']} x {first['cpu_model']}; commit {first['commit']}; "
          f"torch {first['torch']}; OMP_WAIT_POLICY={first['omp_wait_policy']}; load "
          f"{' '.join(map(str, first['loadavg']))} .. {' '.join(map(str, rows[-1]['loadavg']))}")
    for strategy, rounds in rounds_by_strategy(rows).items():
        runners = list(dict.fromkeys(n for rnd in rounds.values() for n in rnd))
        print(f"\n#### {strategy.upper()}: medians over {len(rounds)} round(s)\n")
        print(f"{'runner':<14}{'best acc %':>11}{'all epochs s':>14}")
        for n in runners:
            runs = [rnd[n] for rnd in rounds.values() if n in rnd]
            print(f"{n:<14}{100 * med([best(r) for r in runs]):>11.2f}"
                  f"{med([r['total_seconds'] for r in runs]):>14.1f}")
        goal = GOALS.get(strategy, 1.0)
        for theirs in [n for n in runners if not n.startswith("kaizen")]:
            for ours in [n for n in runners if n.startswith("kaizen")]:
                pairs = compare(rounds, ours, theirs)
                ratios = [t / o for _, o, t in pairs if o and t]
                ratio = med(ratios)
                verdict = (f"; goal >= {goal}x: {'met' if ratio >= goal else 'not met'}"
                           if ours == "kaizen" else "")
                print(f"\n{ours} against {theirs}: target (the lower best) "
                      f"{100 * med([p[0] for p in pairs]):.2f}%, reached in "
                      f"{med([p[1] for p in pairs if p[1] is not None]):.1f} s and "
                      f"{med([p[2] for p in pairs if p[2] is not None]):.1f} s")
                print(f"time to accuracy, {theirs} / {ours}: {ratio:.2f}x (rounds: "
                      f"{' '.join(f'{x:.2f}' for x in ratios)}){verdict}")
    failed = [r for r in rows if r["rc"] != 0]
    if failed:
        print(f"\n{len(failed)} run(s) failed: " +
              ", ".join(f"{r['strategy']} {r['runner']} round {r['round']}" for r in failed))


if __name__ == "__main__":
    main()
