#!/usr/bin/python3
"""Summarises bench/e2e/time_to_accuracy.sh's runs (its JSON lines).

For each strategy and round the target is the lowest of the runners' best test
accuracies, so every runner reaches it; a runner's time to accuracy is the time
of its first model at or above the target. Prints per strategy the medians over
rounds of the best accuracy, the target and the time to it, and the median of
the per-round ratios PyTorch / Kaizen for every Kaizen runner, with the verdict
against the issue's goal for Kaizen's defaults (`kaizen`).

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


def summarise(rows):
    """{strategy: {"rounds": {round: {"target", runner: {"best", "tta", "total"}}}}}."""
    out = {}
    for r in rows:
        if r["rc"] != 0 or not r["points"]:
            continue
        s = out.setdefault(r["strategy"], {})
        s.setdefault(r["round"], {})[r["runner"]] = r
    table = {}
    for strategy, rounds in out.items():
        table[strategy] = {}
        for rnd, runners in rounds.items():
            if "kaizen" not in runners or len(runners) < 2:
                continue
            best = {n: max(p["test_accuracy"] for p in r["points"]) for n, r in runners.items()}
            target = min(best.values())
            table[strategy][rnd] = {"target": target, "runners": {
                n: {"best": best[n], "tta": time_to(r["points"], target),
                    "total": r["total_seconds"], "epochs": len(r["points"])}
                for n, r in runners.items()}}
    return table


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
    failed = [r for r in rows if r["rc"] != 0]
    table = summarise(rows)
    for strategy, rounds in table.items():
        if not rounds:
            continue
        runners = list(dict.fromkeys(n for rnd in rounds.values() for n in rnd["runners"]))
        print(f"\n#### {strategy.upper()}: medians over {len(rounds)} round(s), target = the lower "
              f"best accuracy of the round (median {100 * med([v['target'] for v in rounds.values()]):.2f}%)\n")
        print(f"{'runner':<14}{'best acc %':>11}{'to target s':>13}{'all epochs s':>14}")
        for n in runners:
            v = [rnd["runners"][n] for rnd in rounds.values() if n in rnd["runners"]]
            print(f"{n:<14}{100 * med([x['best'] for x in v]):>11.2f}"
                  f"{med([x['tta'] for x in v if x['tta'] is not None]):>13.1f}"
                  f"{med([x['total'] for x in v]):>14.1f}")
        goal = GOALS.get(strategy, 1.0)
        ours = [n for n in runners if n.startswith("kaizen")]
        for theirs in [n for n in runners if not n.startswith("kaizen")]:
            for k in ours:
                ratios = [rnd["runners"][theirs]["tta"] / rnd["runners"][k]["tta"]
                          for rnd in rounds.values()
                          if theirs in rnd["runners"] and k in rnd["runners"]
                          and rnd["runners"][k]["tta"] and rnd["runners"][theirs]["tta"]]
                ratio = med(ratios)
                per_round = " ".join(f"{x:.2f}" for x in ratios)
                verdict = (f"; goal >= {goal}x: {'met' if ratio >= goal else 'not met'}"
                           if k == "kaizen" else "")
                print(f"\ntime to accuracy, {theirs} / {k}: {ratio:.2f}x (rounds: {per_round})"
                      f"{verdict}")
    if failed:
        print(f"\n{len(failed)} run(s) failed: " +
              ", ".join(f"{r['strategy']} {r['runner']} round {r['round']}" for r in failed))


if __name__ == "__main__":
    main()
