"""`report_to`: TensorBoard, trackio and wandb (offline) beside the run record (`mmr1kit.trackers`).

One real run of `python -m mmr1kit.train PRESET.yaml` in a subprocess, the three trackers at once, 3 steps; then each
tracker's own files are read back (`tracker_records`) against the run record's raw lines: every metric of
`metrics.jsonl` under the same name at the same step, the end-of-training figures of `summary.json`, and the rollout
tables at the throttled steps. Config-time refusals are checked without training.
"""

import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from raw_records import raw_rows
from tracker_records import (
    tensorboard_scalars,
    tensorboard_texts,
    trackio_rows,
    wandb_artifact_files,
    wandb_history,
    wandb_records,
    wandb_summary,
)

from mmr1kit.config import MMR1Config
from mmr1kit.launch import stream_process
from mmr1kit.train import cli

STEPS, EVERY, MAX_ROWS = 3, 2, 3  # rollout tables at steps 1 and 3, three rows each


def same(recorded, tracked, rel=1e-9) -> bool:
    """A metrics.jsonl value (None: no valid value that step) against a tracker's."""
    if recorded is None:
        return tracked is None or math.isnan(tracked)  # sent as NaN; orjson stores NaN as null
    if isinstance(recorded, str):
        return recorded == tracked
    return tracked is not None and tracked == pytest.approx(recorded, rel=rel, abs=1e-12)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, qwen_path, counting_dir):
    root = tmp_path_factory.mktemp("trackers")
    preset = root / "trackers.yaml"
    preset.write_text(yaml.safe_dump({
        "model_name_or_path": str(qwen_path), "dataset": str(counting_dir), "report_to": "tensorboard,trackio,wandb",
        "max_steps": STEPS, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
        "save_strategy": "no", "tracker_rollouts_every": EVERY, "tracker_rollouts_max_rows": MAX_ROWS}))
    run_dir = root / "run"
    home = root / "home"  # wandb's settings, cache and artifact staging, trackio's store: nothing in the real home
    env = {"WANDB_MODE": "offline", "TRACKIO_DIR": str(home / "trackio"), "WANDB_DATA_DIR": str(home / "wandb-data"),
           "WANDB_CACHE_DIR": str(home / "wandb-cache"), "WANDB_CONFIG_DIR": str(home / "wandb-config")}
    stream_process([sys.executable, "-m", "mmr1kit.train", str(preset), "--run_dir", str(run_dir)], out=io.StringIO(),
                   env=env, timeout=600)
    manifest = yaml.safe_load((run_dir / "manifest.json").read_text())  # JSON is YAML
    return SimpleNamespace(run_dir=run_dir, trackers=manifest["trackers"], metrics=raw_rows(run_dir, "metrics.jsonl"),
                           rollouts=raw_rows(run_dir, "rollouts.jsonl"), trackio_dir=home / "trackio",
                           summary=yaml.safe_load((run_dir / "summary.json").read_text()))


def rollouts_of(run, step):
    return [r for r in run.rollouts if r["step"] == step]


# --- every metric of metrics.jsonl, under its name, at its step ------------------------------------------------------


@pytest.mark.slow
def test_the_run_record_is_written_and_says_where_each_tracker_wrote(tracked_run):
    assert [row["step"] for row in tracked_run.metrics] == list(range(1, STEPS + 1))
    assert len(tracked_run.metrics[0]) > 40  # loss, kl/*, entropy/*, timing/*, memory/*, rewards/*, ...
    assert set(tracked_run.trackers) == {"tensorboard", "trackio", "wandb"}
    assert Path(tracked_run.trackers["tensorboard"]["logdir"]) == tracked_run.run_dir / "tensorboard"
    assert Path(tracked_run.trackers["wandb"]["dir"]).parent == tracked_run.run_dir / "wandb"
    assert tracked_run.trackers["wandb"]["mode"] == "offline"
    assert tracked_run.trackers["trackio"]["name"].startswith("run-")  # the run folder's name and its start


@pytest.mark.slow
def test_tensorboard_has_every_metric_under_its_name_at_its_step(tracked_run):
    points = tensorboard_scalars(tracked_run.run_dir / "tensorboard")
    assert all(len({step for step, _ in p}) == len(p) for p in points.values())  # each step once
    scalars = {tag: dict(p) for tag, p in points.items()}
    for row in tracked_run.metrics:
        for name, value in row.items():
            if name != "step":
                assert name in scalars, f"{name} is not in TensorBoard (tags: {sorted(scalars)[:5]}...)"
                assert same(value, scalars[name].get(row["step"]), rel=1e-6), (name, row["step"])  # float32
    renamed = [tag for tag in scalars if tag.startswith("train/") and tag not in tracked_run.summary]
    assert not renamed, f"transformers' train/ prefix: {renamed}"
    for name, value in tracked_run.summary.items():  # end-of-training figures: summary.json's names, last step
        assert same(value, scalars[name][STEPS], rel=1e-6), name


@pytest.mark.slow
def test_trackio_has_every_metric_under_its_name_at_its_step(tracked_run):
    info = tracked_run.trackers["trackio"]
    assert Path(info["dir"]) == tracked_run.trackio_dir
    rows = trackio_rows(info["dir"], info["project"], info["name"])
    for row in tracked_run.metrics:
        logged = [m for step, m in rows if step == row["step"] and "loss" in m]
        assert len(logged) == 1, f"step {row['step']}: {len(logged)} metric rows in trackio"
        for name, value in row.items():
            if name != "step":
                assert name in logged[0] and same(value, logged[0][name]), (name, row["step"])
    (summary,) = [m for step, m in rows if "train/train_runtime" in m]
    assert summary == pytest.approx(tracked_run.summary)


@pytest.mark.slow
def test_wandb_offline_writes_every_metric_against_the_step(tracked_run):
    folder = Path(tracked_run.trackers["wandb"]["dir"])
    assert folder.name.startswith("offline-run-") and (folder / "files").is_dir()
    history = wandb_history(folder)
    for row in tracked_run.metrics:
        logged = [h for h in history if h.get("train/global_step") == row["step"] and "loss" in h]
        assert len(logged) == 1, f"step {row['step']}: {len(logged)} metric rows in the wandb log"
        for name, value in row.items():
            if name != "step":
                assert name in logged[0] and same(value, logged[0][name]), (name, row["step"])
    summary = wandb_summary(folder)
    for name, value in tracked_run.summary.items():
        assert same(value, summary[name]), name


# --- rollout tables, throttled -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tensorboard_gets_the_rollouts_as_a_markdown_table_at_the_due_steps(tracked_run):
    texts = tensorboard_texts(tracked_run.run_dir / "tensorboard", "rollouts")
    assert sorted(texts) == [1, 3]  # step 1, then every 2
    for step, text in texts.items():
        lines = text.splitlines()
        assert lines[0].startswith("| step | prompt_id | group | image | problem | solution | completion |")
        assert len(lines) == 2 + MAX_ROWS
        for line, record in zip(lines[2:], rollouts_of(tracked_run, step)):
            assert f"| {record['prompt_id']} |" in line and record["image"] in line


@pytest.mark.slow
def test_trackio_gets_the_rollouts_as_a_table_with_images(tracked_run):
    info = tracked_run.trackers["trackio"]
    tables = {step: m["rollouts"] for step, m in trackio_rows(info["dir"], info["project"], info["name"])
              if "rollouts" in m}
    assert sorted(tables) == [1, 3]
    for step, table in tables.items():
        assert table["_type"] == "trackio.table"
        rows, records = table["_value"], rollouts_of(tracked_run, step)[:MAX_ROWS]
        assert [r["completion"] for r in rows] == [r["completion"] for r in records]
        assert [r["advantage"] for r in rows] == [r["advantage"] for r in records]
        assert [r["rewards/accuracy"] for r in rows] == [r["rewards/accuracy"] for r in records]
        for row in rows:
            assert (tracked_run.trackio_dir / "media" / row["image"]["file_path"]).is_file()


@pytest.mark.slow
def test_wandb_gets_the_rollouts_as_tables_with_images(tracked_run):
    import json

    folder = Path(tracked_run.trackers["wandb"]["dir"])
    logged = [h for h in wandb_history(folder) if "rollouts/_type" in h]
    assert [(h["train/global_step"], h["rollouts/nrows"]) for h in logged] == [(1, MAX_ROWS), (3, MAX_ROWS)]
    for entry in logged:
        table = json.loads((folder / "files" / entry["rollouts/path"]).read_text())
        records = rollouts_of(tracked_run, entry["train/global_step"])[:MAX_ROWS]
        column = table["columns"].index("completion")
        assert [r[column] for r in table["data"]] == [r["completion"] for r in records]
    (images,) = wandb_artifact_files(folder).values()  # the run's table artifact: every version's files
    assert {Path(p).name for p in images if p.endswith(".png")} == {
        Path(r["image"]).name for step in (1, 3) for r in rollouts_of(tracked_run, step)[:MAX_ROWS]}


# --- at config time: one line, before anything loads ----------------------------------------------------------------


def test_report_to_from_a_string_a_preset_list_and_the_command_line(tmp_path):
    assert MMR1Config(report_to="tensorboard, trackio").report_to == ["tensorboard", "trackio"]  # notebook 01
    assert MMR1Config(report_to="none").report_to == []
    preset = tmp_path / "p.yaml"
    preset.write_text("report_to: [tensorboard, wandb]\n")
    assert MMR1Config.from_yaml(preset).report_to == ["tensorboard", "wandb"]
    assert MMR1Config.from_args([str(preset), "--report_to", "trackio", "tensorboard"]).report_to == [
        "trackio", "tensorboard"]


def test_an_unknown_tracker_is_one_line_with_a_suggestion():
    with pytest.raises(ValueError) as error:
        MMR1Config(report_to="tensorbord")
    assert str(error.value).count("\n") == 0
    assert "report_to=['tensorbord']: unknown tracker(s) 'tensorbord' (did you mean tensorboard?)" in str(error.value)


def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    import transformers.integrations.integration_utils as integrations

    monkeypatch.setattr(integrations, "is_trackio_available", lambda: False)  # as on a machine without trackio
    with pytest.raises(ValueError, match=r"^MMR1Config.report_to=\['trackio'\]: trackio not installed: "
                                         r"pip install 'mmr1kit\[trackers\]' \(tensorboard, trackio, wandb\), or "
                                         r"leave trackio out$"):
        MMR1Config(report_to="trackio")


def test_an_unwritable_tracker_folder_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(blocker / "tb"))
    assert cli(["--report_to", "tensorboard", "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: MMR1Config.report_to=['tensorboard']: tensorboard: cannot write TensorBoard's event "
                   f"files to {blocker / 'tb'} ({blocker} is a file); set TENSORBOARD_LOGGING_DIR to a writable "
                   f"folder\n")
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    with pytest.raises(ValueError, match=r"wandb: cannot write wandb's run folder to .*a-file/run \(.*a-file is a "
                                         r"file\); choose a writable run_dir or set WANDB_DIR$"):
        MMR1Config(report_to="wandb", run_dir=str(blocker / "run"))


def test_a_wandb_mode_wandb_does_not_know_is_one_line(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ValueError, match=r"WANDB_MODE='ofline' is not a wandb mode; expected one of \('online', "):
        MMR1Config(report_to="wandb")


def test_rollout_table_settings_are_checked():
    with pytest.raises(ValueError, match=r"^MMR1Config.tracker_rollouts_max_rows=0: must be >= 1$"):
        MMR1Config(tracker_rollouts_max_rows=0)
    with pytest.raises(ValueError, match=r"^MMR1Config.tracker_rollouts_every=-1: must be >= 0$"):
        MMR1Config(tracker_rollouts_every=-1)


# --- the pieces -----------------------------------------------------------------------------------------------------


def test_step_logs_keep_the_run_records_names():
    from mmr1kit.trackers import step_logs

    values, summary = step_logs({"loss": 0.5, "kl/k3": 0.01, "rewards/accuracy/std": None})
    assert not summary and set(values) == {"loss", "kl/k3", "rewards/accuracy/std"}
    assert math.isnan(values["rewards/accuracy/std"])  # no valid value this step: the name is there, as NaN
    values, summary = step_logs({"train_runtime": 2.5, "train_loss": 0.1, "epoch": 1.0})
    assert summary and values == {"train/train_runtime": 2.5, "train/train_loss": 0.1, "train/epoch": 1.0}


def test_markdown_table_escapes_what_would_break_a_row():
    from mmr1kit.trackers import markdown_table

    row = {"step": 1, "prompt_id": "a", "group": 0, "image": None, "problem": "x|y", "solution": "2",
           "completion": "line 1\nline 2" + "z" * 600, "rewards/accuracy": 1.0, "reward": 1.0,
           "advantage": 0.123456789, "length": 7, "truncated": False}
    lines = markdown_table([row]).splitlines()
    assert len(lines) == 3 and lines[2].count(" | ") == lines[0].count(" | ")
    assert "x\\|y" in lines[2] and "line 1<br>line 2" in lines[2] and "0.1235" in lines[2] and "z…" in lines[2]


def test_rollout_tables_are_due_at_the_first_step_then_every_n():
    from mmr1kit.trackers import RolloutTables

    tables = RolloutTables([object()], every=10, max_rows=4)
    assert [s for s in range(1, 40) if tables.due(s)] == [1, 11, 21, 31]
    assert not any(RolloutTables([object()], every=0, max_rows=4).due(s) for s in range(1, 40))
    assert not RolloutTables([], every=1, max_rows=4).due(1)  # no tracker that takes tables


def test_a_resumed_run_hides_tensorboards_points_after_its_checkpoint(tmp_path):
    """Two starts of one run folder: the second resumes at step 2, as the run record drops the dead start's tail."""
    from transformers import TrainerControl, TrainerState

    from mmr1kit.trackers import TensorBoardTracker

    args = MMR1Config(run_dir=str(tmp_path / "run"), report_to="tensorboard")
    for start, (first, scale) in enumerate([(0, 1.0), (2, 10.0)]):
        tracker = TensorBoardTracker(SimpleNamespace(args=args, recorder=None))  # the callback alone, no trainer
        state, control = TrainerState(global_step=first), TrainerControl()
        tracker.on_train_begin(args, state, control)
        for step in range(first + 1, 5):
            state.global_step = step
            tracker.on_log(args, state, control, logs={"reward": scale * step})
        tracker.on_train_end(args, state, control)
    points = tensorboard_scalars(tmp_path / "run" / "tensorboard")["reward"]
    assert points == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]  # without the purge: 3 and 4 twice


def test_wandb_runs_end_with_training_so_the_next_trainer_gets_its_own(tmp_path, monkeypatch):
    """In one process (a notebook kernel), two trainings: two finished offline runs, not one run with both."""
    import wandb
    from transformers import TrainerControl, TrainerState

    from mmr1kit.trackers import WandbTracker

    for variable, folder in {"WANDB_MODE": "offline", "WANDB_DATA_DIR": tmp_path / "data",
                             "WANDB_CACHE_DIR": tmp_path / "cache", "WANDB_CONFIG_DIR": tmp_path / "config"}.items():
        monkeypatch.setenv(variable, str(folder))
    ids = []
    for name in ("first", "second"):
        args = MMR1Config(run_dir=str(tmp_path / name), report_to="wandb")
        tracker = WandbTracker(SimpleNamespace(args=args, recorder=None))  # the callback alone, no trainer
        state, control = TrainerState(global_step=0, is_world_process_zero=True), TrainerControl()
        tracker.on_train_begin(args, state, control)
        state.global_step = 1
        tracker.on_log(args, state, control, logs={"reward": 0.5})
        tracker.on_train_end(args, state, control)
        assert wandb.run is None
        (folder,) = (tmp_path / name / "wandb").glob("offline-run-*")
        history = wandb_history(folder)
        kinds = [r.WhichOneof("record_type") for r in wandb_records(folder)]
        assert [h["reward"] for h in history if "reward" in h] == [0.5], (name, history, kinds)
        ids.append(folder.name.rsplit("-", 1)[1])
    assert ids[0] != ids[1]
