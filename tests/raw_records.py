"""Read a run folder's JSON-lines files as written, line by line: what the "each step exactly once" tests check.

`mmr1kit.runs.load_run` is the reader notebooks use; a test of the record itself must not go through a reader that
could tidy it. Every line must parse (a torn line here is a failure, not something to skip).
"""

import json
from pathlib import Path


def raw_rows(run_dir, name: str) -> list[dict]:
    """Every line of `<run_dir>/<name>` (e.g. metrics.jsonl), parsed."""
    text = (Path(run_dir) / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


def raw_steps(run_dir, name: str = "metrics.jsonl") -> list[int]:
    """The `step` of every line, in file order."""
    return [row["step"] for row in raw_rows(run_dir, name)]


def rollouts_per_step(run_dir) -> dict[int, int]:
    """Rollout lines per step, each step's lines contiguous (a step recorded twice fails here)."""
    counts: dict[int, int] = {}
    previous = None
    for step in raw_steps(run_dir, "rollouts.jsonl"):
        assert step == previous or step not in counts, f"step {step} recorded in two places of rollouts.jsonl"
        counts[step] = counts.get(step, 0) + 1
        previous = step
    return counts
