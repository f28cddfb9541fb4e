"""mmr1kit.run_folder: one run per folder, and a resume that takes the run's own recorded parameters.

Run folders here are real files written by `RunRecorder`; the trainer and entry-point tests train into them.
"""

import json
import time

import pytest

from mmr1kit.config import MMR1Config
from mmr1kit.run_folder import (
    RunFolderInUse,
    check_resume_step,
    claim_run_dir,
    config_from_record,
    resume_conflicts,
    run_record,
    start_run,
)
from mmr1kit.runs import RunRecorder
from mmr1kit.train import config_from_args


def recorded_run(run_dir, **values):
    """A run folder as a run leaves it: its config, two logged steps."""
    config = MMR1Config.from_dict({"run_dir": str(run_dir), **values})
    recorder = RunRecorder(run_dir)
    recorder.write_config(config)
    for step in (1, 2):
        recorder.log_metrics(step, {"loss": 0.1})
    return config


def test_a_folder_with_a_run_is_refused_and_the_message_names_the_ways_out(tmp_path):
    run_dir = tmp_path / "run"
    recorded_run(run_dir)
    with pytest.raises(RunFolderInUse) as info:
        claim_run_dir(run_dir, how="cli")
    assert str(info.value) == (
        f"run folder {run_dir} already holds a run (config.json, metrics.jsonl; 2 logged step(s)): resume it with "
        f"--resume, choose another --run-dir, or pass --overwrite to move it aside to run.old-<YYYYmmdd-HHMMSS>")
    with pytest.raises(RunFolderInUse, match="resume_from_checkpoint=True, choose another run_dir, or pass "
                                             "overwrite_run_dir=True"):
        start_run(MMR1Config(run_dir=str(run_dir)))
    assert claim_run_dir(run_dir, resume=True) is None and run_record(run_dir) == ["config.json", "metrics.jsonl"]


def test_an_executed_notebook_or_empty_folders_are_not_a_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "01_train_grpo.ipynb").write_text("{}")
    (tmp_path / "warmstart").mkdir()
    assert run_record(tmp_path) == [] and claim_run_dir(tmp_path) is None


def test_overwrite_moves_the_old_run_aside(tmp_path):
    run_dir = tmp_path / "run"
    recorded_run(run_dir)
    moved = claim_run_dir(run_dir, overwrite=True)
    assert moved.name.startswith("run.old-" + time.strftime("%Y%m%d")) and moved.parent == tmp_path
    assert (moved / "metrics.jsonl").read_text().count("\n") == 2  # the old record, whole
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


def test_resume_takes_the_recorded_parameters_and_refuses_a_changed_one(tmp_path):
    run_dir = tmp_path / "run"
    recorded = recorded_run(run_dir, max_steps=30, learning_rate=3e-4, per_device_train_batch_size=4,
                            num_generations=4, steps_per_generation=4, gradient_accumulation_steps=4)
    resumed = config_from_args(["--run_dir", str(run_dir), "--resume_from_checkpoint", "true"])
    before = {k: v for k, v in recorded.to_dict().items() if k != "resume_from_checkpoint"}
    after = {k: v for k, v in resumed.to_dict().items() if k != "resume_from_checkpoint"}
    assert after == before and resumed.max_steps == 30 and resumed.generation_batch_size == 16

    with pytest.raises(ValueError) as info:
        config_from_args(["--run_dir", str(run_dir), "--resume_from_checkpoint", "true", "--max_steps", "40",
                          "--learning_rate", "3e-4"])  # the same learning rate is no change
    assert str(info.value) == (f"resume: max_steps=40 differs from the run's max_steps=30 ({run_dir}/config.json); "
                               f"leave it out to continue the run as it was, or allow the change with "
                               f"--allow_changes max_steps")
    longer = config_from_args(["--run_dir", str(run_dir), "--resume_from_checkpoint", "true", "--max_steps", "40",
                               "--per_device_train_batch_size", "8", "--allow_changes", "max_steps",
                               "per_device_train_batch_size"])
    assert (longer.max_steps, longer.learning_rate, longer.generation_batch_size) == (40, 3e-4, 32)  # derived again


def test_a_resumed_config_is_checked_against_the_record_in_the_trainer_too(tmp_path):
    run_dir = tmp_path / "run"
    recorded_run(run_dir, max_steps=30)
    with pytest.raises(ValueError, match=r"resume: max_steps=20 differs from the run's max_steps=30 .*"
                                         r"allow_changes=\[max_steps\]"):
        start_run(MMR1Config(run_dir=str(run_dir), resume_from_checkpoint="true"))  # max_steps left at its default
    start = start_run(MMR1Config(run_dir=str(run_dir), resume_from_checkpoint="true", max_steps=50,
                                 allow_changes=["max_steps"]))
    assert start.resume and start.changes == {"max_steps": [30, 50]}
    assert resume_conflicts({"seed": 0, "run_dir": "a"}, {"seed": 0, "run_dir": "b"}) == []  # a moved folder


def test_config_from_record_keeps_what_was_set_and_derives_the_rest(tmp_path):
    config = MMR1Config(run_dir=str(tmp_path / "a"), generation_batch_size=32, per_device_train_batch_size=8)
    recorded = json.loads(json.dumps(config.to_dict()))
    rebuilt = config_from_record(MMR1Config, recorded, {"run_dir": str(tmp_path / "b")})
    assert rebuilt.generation_batch_size == 32 and rebuilt.steps_per_generation == 4
    assert rebuilt.output_dir == str(tmp_path / "b" / "checkpoints")  # follows the folder


def test_a_finished_run_is_not_resumed_one_step_past_its_end(tmp_path):
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 6}')
    check_resume_step(checkpoint, 7)
    with pytest.raises(ValueError, match=r"already reached step 6 of max_steps=6 .*raise max_steps"):
        check_resume_step(checkpoint, 6)


def test_the_trainer_refuses_the_folder_before_it_loads_a_model(tmp_path):
    from mmr1kit.trainer import MMR1Trainer

    run_dir = tmp_path / "run"
    recorded_run(run_dir)
    before = (run_dir / "config.json").read_text()
    with pytest.raises(RunFolderInUse, match=f"run folder {run_dir} already holds a run"):  # not a load error:
        MMR1Trainer(model=str(tmp_path / "no-such-model"), args=MMR1Config(run_dir=str(run_dir)))  # checked first
    assert (run_dir / "config.json").read_text() == before
