"""Reading the JSON Lines result files the benchmarks append to
(bench/runs/history/*_results.jsonl): one row per run of one configuration, each with the
run_id of the benchmark invocation it belongs to."""

import json
import sys


def load_run(path, run_id=None, keep=lambda row: row.get("result")):
    """The rows of one run (default: the last run in the file) that `keep`
    accepts, and that run's id. Exits with a message when there are none."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        sys.exit(f"{path} holds no results")
    run_id = run_id or rows[-1]["run_id"]
    rows = [r for r in rows if r["run_id"] == run_id and keep(r)]
    if not rows:
        sys.exit(f"no finished runs with run_id {run_id} in {path}")
    return rows, run_id
