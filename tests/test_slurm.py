"""`mmr1kit.slurm`: Slurm's commands as mmr1kit calls them, on a real one-node Slurm (`tests/slurm_cluster.py`)."""

import os
import sys
from pathlib import Path

import pytest

from mmr1kit import slurm

pytest_plugins = ["slurm_cluster"]


def test_ranges_and_task_ids_round_trip():
    assert slurm.ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm.ranges([3]) == "3"
    assert slurm._task_ids("[0-2,5,7-8%2]") == [0, 1, 2, 5, 7, 8]
    assert slurm._task_ids("4") == [4]
    assert slurm._task_ids("[0-6:3]") == [0, 3, 6]


def test_a_missing_command_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with pytest.raises(slurm.SlurmError, match=r"^`squeue` is not on the PATH: "):
        slurm.command("squeue")


@pytest.mark.slurm
def test_sbatch_job_states_and_hostnames_on_a_real_cluster(slurm_cluster, tmp_path):
    header = slurm.script_header("t", tmp_path / "%A_%a.out", resources=["--ntasks=1"], partition="debug",
                                 time_limit="1:00", sbatch_args=["--comment=mmr1kit"])
    assert header[1:] == ["#SBATCH --job-name=t", f"#SBATCH --output={tmp_path}/%A_%a.out", "#SBATCH --ntasks=1",
                          "#SBATCH --partition=debug", "#SBATCH --time=1:00", "#SBATCH --comment=mmr1kit"]
    slurm.check_submission(header, "--array=0-2")  # the cluster would take it
    with pytest.raises(slurm.SlurmError, match=r"^sbatch refused the job: invalid partition specified: nope$"):
        slurm.check_submission(header + ["#SBATCH --partition=nope"])
    with pytest.raises(slurm.SlurmError, match=r"^sbatch refused the job: Invalid --time specification$"):
        slurm.check_submission(header + ["#SBATCH --time=soon"])
    with pytest.raises(slurm.SlurmError, match=r"^sbatch refused the job: Invalid generic resource \(gres\) spec"):
        slurm.check_submission(header + ["#SBATCH --gpus=1"])  # the test node has no GPUs
    with pytest.raises(ValueError, match="--sbatch-arg 'comment=x': expected an sbatch option"):
        slurm.check_submission(header + ["#SBATCH comment=x"])
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join([*header, "true", ""]))
    job = slurm.sbatch(script, "--array=0-2", "--hold")
    assert job.isdigit() and os.path.exists(script)
    assert slurm.job_states(job) == {0: "PENDING", 1: "PENDING", 2: "PENDING"}
    assert slurm_cluster.run("scancel", f"{job}_1").returncode == 0
    slurm_cluster.run("scontrol", "release", job)
    slurm_cluster.wait(job)
    # a task cancelled while it waited leaves no trace (Slurm 22.05): its point is then "not started"
    assert slurm.job_states(job) == {0: "COMPLETED", 2: "COMPLETED"}
    assert slurm.hostnames("gpu[07-08],cpu1") == ["gpu07", "gpu08", "cpu1"]
