"""Phase bookkeeping: memory/peak_* attribute each segment to the innermost open phase, and a real run records
them for every step next to timing/*."""

import json
from collections import defaultdict

import numpy as np
import pytest
from runs_fixture import grounding_dir, tiny_run  # noqa: F401 (pytest fixtures)

from mmr1kit.phases import GIB, PhaseLog, process_peak_bytes


def touch(megabytes: int) -> np.ndarray:
    """A resident array: numpy pages count only once written."""
    return np.ones(megabytes * 2**20 // 8)


def test_a_phase_gets_its_own_peak_not_its_neighbours():
    phases = PhaseLog("cpu")
    before = phases.gauge.peak()
    with phases.phase("step"):  # the loss pass around a rollout, as in training_step
        with phases.phase("rollout"):
            with phases.phase("generate"):
                big = touch(120)
                del big
            small = touch(10)
            del small
        loss = touch(30)
        del loss
    metrics = defaultdict(list)
    phases.log_memory(metrics)
    peak = {k.removeprefix("memory/peak_"): v[0] for k, v in metrics.items() if k != "memory/peak"}
    assert peak["generate"] * GIB >= before + 110 * 2**20
    assert peak["loss"] < peak["generate"] - 60 / 1024  # reset after generation: its 120 MB are not the loss's
    assert peak["rollout"] < peak["generate"] - 60 / 1024
    assert metrics["memory/peak"] == [max(peak.values())]
    assert process_peak_bytes() >= before + 110 * 2**20  # the process-wide peak survives the resets
    assert phases.seconds["generate"] > 0 and phases.seconds["step"] >= phases.seconds["rollout"]


def test_phases_must_close_in_order():
    phases = PhaseLog("cpu")
    phases.begin("step")
    with pytest.raises(RuntimeError, match=r"end\('rollout'\): open phases are \['step'\]"):
        phases.end("rollout")


def test_every_step_of_a_run_records_memory_per_phase(tiny_run):  # noqa: F811
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3
    for row in steps:
        for name in ("generate", "reference", "rollout", "loss", "optimizer"):
            assert 0.1 < row[f"memory/peak_{name}"] <= row["memory/peak"], (name, row)  # resident set, GiB
        assert row["timing/generate"] > 0
