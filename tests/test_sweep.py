"""`mmr1kit sweep` end to end: 2 KL estimators x 2 seeds of the training notebook, then the comparison report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["-p", "warmstart_steps", "2", "-p", "max_steps", "2", "-p", "eval_size", "4", "-p", "train_sample_size",
         "16", "-p", "max_completion_length", "6"]


@pytest.mark.slow
def test_cli_sweep_of_the_training_notebook_writes_four_runs_and_a_comparison(tmp_path):
    sweep_dir = tmp_path / "kl"
    cmd = [sys.executable, "-m", "mmr1kit.cli", "sweep", str(ROOT / "notebooks" / "01_train_grpo.ipynb"),
           "--grid", "kl_approximator=k1,k3", "--grid", "seed=0,1", *SMOKE, "--sweep-dir", str(sweep_dir)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(sweep_dir)  # the sweep folder is printed last
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["succeeded"] * 4
    for point in points:
        run = Path(point["run_dir"])
        config = json.loads((run / "config.json").read_text())
        assert (config["kl_approximator"], config["seed"]) == (point["parameters"]["kl_approximator"],
                                                                 point["parameters"]["seed"])
        summary = json.loads((run / "summary.json").read_text())
        assert 0 <= summary["eval/accuracy_after"] <= 1 and (run / "01_train_grpo.html").is_file()
    comparison = json.loads((sweep_dir / "comparison" / "comparison.json").read_text())
    assert comparison["runs"] == 4 and comparison["failed"] == 0
    assert {g["key"]["kl_approximator"] for g in comparison["groups"]} == {"k1", "k3"}
    assert all(g["runs"] == {"total": 2, "failed": 0} for g in comparison["groups"])
    assert (sweep_dir / "comparison" / "05_compare_runs.html").is_file()
