import json
import os

import pytest

from mmr1kit.runs import RunRecorder, append_jsonl, load_run, read_jsonl, write_json


def test_recorder_writes_a_complete_run_folder(tmp_path):
    rec = RunRecorder(tmp_path / "r")
    rec.write_config({"lr": 1e-4, "seed": 0})
    rec.write_manifest(seed=0, dataset="d")
    for step in (1, 2, 3):
        rec.log_metrics(step, {"loss": 0.1 * step, "reward": step / 10})
        rec.log_rollouts([{"step": step, "prompt_id": "a", "completion": "x", "reward": 1.0, "advantage": 0.0}] * 2)
    rec.write_summary(a=1)
    rec.write_summary(b=2)  # merged, not replaced
    run = load_run(tmp_path / "r")
    assert run.config == {"lr": 1e-4, "seed": 0}
    assert run.manifest["seed"] == 0 and run.manifest["versions"]["torch"] and run.manifest["machine"]["cpu_count"]
    assert run.metrics["step"].tolist() == [1, 2, 3] and run.metrics["loss"].iloc[-1] == pytest.approx(0.3)
    assert len(run.rollouts) == 6 and run.summary == {"a": 1, "b": 2} and run.warnings == []


def test_half_written_last_line_is_dropped_and_reported(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # the process died mid-write
    rows, warnings = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2]
    assert warnings == ["metrics.jsonl: line 3 skipped (half-written last line)"]
    run = load_run(tmp_path)
    assert run.metrics["step"].tolist() == [1, 2] and run.warnings


def test_resumed_steps_are_not_duplicated(tmp_path):
    rec = RunRecorder(tmp_path)
    for step in (1, 2, 3, 4):
        rec.log_metrics(step, {"loss": float(step)})
        rec.log_rollouts([{"step": step}])
    rec.truncate_after(2)  # the checkpoint was at step 2: rows 3-4 of the dead process are dropped
    for step in (3, 4):
        rec.log_metrics(step, {"loss": step + 0.5})
        rec.log_rollouts([{"step": step}])
    run = load_run(tmp_path)
    assert run.metrics["step"].tolist() == [1, 2, 3, 4] and run.metrics["loss"].tolist() == [1, 2, 3.5, 4.5]
    assert run.rollouts["step"].tolist() == [1, 2, 3, 4] and run.repeated_steps == {} and run.warnings == []


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = write_json(tmp_path / "summary.json", {"a": 1})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the last complete version survives


def test_load_run_of_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folder"):
        load_run(tmp_path / "nope")


def test_steps_recorded_twice_are_reported_never_dropped(tmp_path):
    rec = RunRecorder(tmp_path)
    for run in ("first", "second"):  # two runs appended to one folder, as a second run without a claim would
        for step in (1, 2, 3):
            rec.log_metrics(step, {"loss": float(step), "run": run})
            rec.log_rollouts([{"step": step, "run": run}] * 2)
    run = load_run(tmp_path)
    assert run.metrics["step"].tolist() == [1, 2, 3, 1, 2, 3]  # every row as written
    assert len(run.rollouts) == 12
    assert run.repeated_steps == {"metrics.jsonl": [1, 2, 3], "rollouts.jsonl": [1, 2, 3]}
    assert run.warnings == [
        "metrics.jsonl: step(s) 1, 2, 3 recorded more than once (two runs in one folder?); every row is kept as written",
        "rollouts.jsonl: step(s) 1, 2, 3 recorded more than once (two runs in one folder?); every row is kept as written"]
