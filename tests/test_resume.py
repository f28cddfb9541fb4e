"""Stop a real training process mid-run (SIGKILL: a crash; SIGINT: Ctrl-C), resume it, and compare with an
uninterrupted run. The records are read line by line (`raw_records`), as written."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from raw_records import raw_rows, raw_steps, rollouts_per_step

from mmr1kit.runs import load_run

HERE = Path(__file__).resolve().parent
NONDETERMINISTIC = ("step_time", "timing/", "tokens_per_second/", "memory/", "epoch")  # clocks and memory gauges
# work that depends on the process's history: a fresh process runs TRL's image preprocessing as given at its first
# step, to learn the layout the cache assembles (mmr1kit.preprocess_cache)
NONDETERMINISTIC += ("vision/preprocessed",)


def _command(preset, run_dir, *extra):
    return [sys.executable, str(HERE / "train_script.py"), str(preset), "--run_dir", str(run_dir), *extra]


def _train(preset, run_dir, *extra, env=None):
    return subprocess.run(_command(preset, run_dir, *extra), env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(qwen_path, counting_dir, tmp_path_factory):
    """The preset and the run folder of a 6-step run that nothing interrupted."""
    root = tmp_path_factory.mktemp("resume")
    preset = root / "preset.yaml"
    preset.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(qwen_path), dataset=str(counting_dir), max_steps=6, save_steps=2,
        save_total_limit=None, learning_rate=1e-2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=8, beta=0.04, temperature_func="linear", temperature_begin=0.7, temperature_end=1.3,
    )))
    whole = _train(preset, root / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    return preset, root / "whole"


def assert_same_run(whole, resumed):
    """Every step exactly once in the raw records, with the uninterrupted run's numbers and completions."""
    assert raw_steps(resumed) == [1, 2, 3, 4, 5, 6]
    assert rollouts_per_step(resumed) == {step: 8 for step in range(1, 7)}
    a, b = raw_rows(whole, "metrics.jsonl"), raw_rows(resumed, "metrics.jsonl")
    keys = [k for k in a[0] if not k.startswith(NONDETERMINISTIC) and k in b[0]]
    assert {"loss", "reward", "kl/k3", "entropy", "temperature", "grad_norm"} <= set(keys)
    for key in keys:  # identical where CPU computation is deterministic: every step, before and after the stop
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5, abs=1e-7, nan_ok=True), key
    completions = [[r["completion"] for r in raw_rows(run, "rollouts.jsonl")] for run in (whole, resumed)]
    assert completions[0] == completions[1]
    assert not load_run(resumed).warnings


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
    preset, whole = uninterrupted
    killed = _train(preset, tmp_path / "resumed", env={"MMR1KIT_TEST_SIGKILL_AT_STEP": "5"})
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    assert raw_steps(tmp_path / "resumed") == [1, 2, 3, 4, 5]  # step 5 was recorded after checkpoint-4 ...
    resumed = _train(preset, tmp_path / "resumed", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(whole, tmp_path / "resumed")  # ... and is in the records exactly once


@pytest.mark.slow
def test_ctrl_c_stops_at_the_end_of_a_step_and_the_printed_command_resumes(uninterrupted, tmp_path):
    preset, whole = uninterrupted
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen(_command(preset, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "metrics.jsonl").is_file() or len(raw_steps(run_dir)) < 2:  # 2 steps done: press Ctrl-C
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    [line] = [text for text in stderr.splitlines() if text.startswith("stopped")]
    found = re.fullmatch(r"stopped at step (\d+) of 6 \(Ctrl-C\); checkpoint (\S+); resume with: (.+)", line)
    assert found, line
    step = int(found[1])
    assert 2 <= step < 6 and found[2] == str(run_dir / "checkpoints" / f"checkpoint-{step}")
    assert (Path(found[2]) / "model.safetensors").is_file()  # the step that ran when Ctrl-C came was finished and saved
    assert raw_steps(run_dir) == list(range(1, step + 1))
    assert json.loads((run_dir / "summary.json").read_text())["interrupted"]["step"] == step

    command = shlex.split(found[3])  # `python tests/train_script.py --run_dir DIR --resume_from_checkpoint true`
    assert command[0] == "python" and "--max_steps" not in command  # the parameters come from the run's record
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(whole, run_dir)
    assert "interrupted" not in json.loads((run_dir / "summary.json").read_text())
    resumes = json.loads((run_dir / "manifest.json").read_text())["resumes"]
    assert [r["after_stop"]["step"] for r in resumes] == [step]
