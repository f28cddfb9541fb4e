"""`mmr1kit sweep` end to end (2 KL estimators x 2 seeds of the training notebook, then the comparison report), and
GPUs shared out among the points that run at once (`--gpus-per-job`)."""

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmr1kit.cli import main
from mmr1kit.sweep import gpu_groups, visible_gpus

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


GPU_NB = ROOT / "tests" / "fixtures" / "notebooks" / "gpu_env.ipynb"


@pytest.mark.parametrize("visible, per_job, jobs, groups", [
    ("0,1,2,3", 2, 8, ["0,1", "2,3"]),  # never more jobs than GPUs / K
    ("0,1,2,3", 1, None, ["0", "1", "2", "3"]),  # no --jobs: as many as the GPUs allow
    ("0,1,2,3", 1, 3, ["0", "1", "2"]),
    ("3,5,6", 2, 2, ["3,5"]),  # the GPUs this process was given, by their names
    ("GPU-aa,GPU-bb", 1, 2, ["GPU-aa", "GPU-bb"]),  # UUIDs
    ("0,1,-1,2", 1, 4, ["0", "1"]),  # CUDA ignores the devices after an invalid one
])
def test_gpu_groups_share_out_the_visible_gpus(monkeypatch, visible, per_job, jobs, groups):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # the seam: Slurm sets it in a GPU allocation
    assert gpu_groups(per_job, jobs) == groups


@pytest.mark.parametrize("visible", ["", "NoDevFiles", "0"])
def test_gpu_groups_refuse_more_gpus_per_job_than_visible(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ValueError, match=rf"--gpus-per-job 2: this machine shows {len(visible_gpus())} GPU\(s\) "
                                         rf"\(CUDA_VISIBLE_DEVICES='{visible}'\); drop --gpus-per-job"):
        gpu_groups(2, 1)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: the CPU refusal needs none")
def test_gpus_per_job_on_this_cpu_machine_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    code = main(["sweep", str(GPU_NB), "--grid", "x=0,1", "--gpus-per-job", "1", "--sweep-dir", str(tmp_path / "s")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [(
        "error: --gpus-per-job 1: this machine shows 0 GPU(s) (no nvidia-smi, CUDA_VISIBLE_DEVICES unset); drop "
        "--gpus-per-job to run on CPUs, or submit to a GPU cluster with --submit slurm")]
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_gpus_per_job_gives_each_running_point_its_own_gpus(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # four GPUs for this sweep
    code = main(["sweep", str(GPU_NB), "--grid", "x=0,1,2,3", "-p", "hold_s", "1", "--jobs", "8", "--gpus-per-job", "2",
                 "--no-compare", "--sweep-dir", str(tmp_path / "g")])
    assert code == 0, capsys.readouterr()
    record = json.loads((tmp_path / "g" / "sweep.json").read_text())
    assert (record["jobs"], record["gpus_per_job"]) == (2, 2)  # 4 GPUs / 2 per job: 2 at a time, not 8
    assert [p["status"] for p in record["points"]] == ["succeeded"] * 4
    seen = [json.loads((Path(p["run_dir"]) / "summary.json").read_text()) for p in record["points"]]
    assert [s["gpus"] for s in seen] == [p["gpus"] for p in record["points"]]  # what the kernel saw, recorded
    assert {s["gpus"] for s in seen} == {"0,1", "2,3"}
    for a, b in itertools.combinations(seen, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time: never the same GPUs
            assert a["gpus"] != b["gpus"]

    capsys.readouterr()  # --status on a sweep that ran here: what sweep.json recorded; --resume is for Slurm sweeps
    assert main(["sweep", "--status", str(tmp_path / "g")]) == 0
    assert [line.split()[:3] for line in capsys.readouterr().out.splitlines()[1:5]] == [
        [f"x={x}", "succeeded", "-"] for x in range(4)]
    assert main(["sweep", "--resume", str(tmp_path / "g")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'g'} ran on this machine, not through --submit slurm")
