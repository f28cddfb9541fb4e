"""Kill a real training process with SIGKILL mid-run, resume it, and compare with an uninterrupted run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmr1kit.runs import load_run


HERE = Path(__file__).resolve().parent
NONDETERMINISTIC = ("step_time", "timing/", "tokens_per_second/", "epoch")  # wall-clock measurements
# work that depends on the process's history: a fresh process runs TRL's image preprocessing as given at its first
# step, to learn the layout the cache assembles (mmr1kit.preprocess_cache)
NONDETERMINISTIC += ("vision/preprocessed",)


def _train(preset, run_dir, *extra, env=None):
    cmd = [sys.executable, str(HERE / "train_script.py"), str(preset), "--run_dir", str(run_dir), *extra]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(qwen_path, counting_dir, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(qwen_path), dataset=str(counting_dir), max_steps=6, save_steps=2,
        save_total_limit=None, learning_rate=1e-2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=8, beta=0.04, temperature_func="linear", temperature_begin=0.7, temperature_end=1.3,
    )))
    whole = _train(preset, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _train(preset, tmp_path / "resumed", env={"MMR1KIT_TEST_SIGKILL_AT_STEP": "5"})
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    partial = load_run(tmp_path / "resumed")
    assert partial.metrics["step"].tolist() == [1, 2, 3, 4, 5]  # step 5 was recorded after checkpoint-4 ...
    resumed = _train(preset, tmp_path / "resumed", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = load_run(tmp_path / "whole"), load_run(tmp_path / "resumed")
    assert b.metrics["step"].tolist() == [1, 2, 3, 4, 5, 6]  # ... and is in the records exactly once
    assert b.rollouts.groupby("step").size().tolist() == [8] * 6
    assert not b.warnings
    keys = [k for k in a.metrics.columns if not k.startswith(NONDETERMINISTIC) and k in b.metrics]
    assert {"loss", "reward", "kl/k3", "entropy", "temperature", "grad_norm"} <= set(keys)
    for key in keys:  # identical where CPU computation is deterministic: every step, before and after the kill
        assert b.metrics[key].tolist() == pytest.approx(a.metrics[key].tolist(), rel=1e-5, abs=1e-7, nan_ok=True), key
    assert b.rollouts["completion"].tolist() == a.rollouts["completion"].tolist()
