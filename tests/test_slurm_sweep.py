"""`mmr1kit sweep --submit slurm / --status / --resume` (`mmr1kit.slurm_sweep`) against a real one-node Slurm
(`tests/slurm_cluster.py`).

The big test submits a 2 x 2 sweep of notebook 01 at smoke size, cancels one point's task after its first checkpoint,
lets the report job report it, resumes it with `--resume` and checks the four run folders and the comparison report
from the raw files. The others: a failing point (reported, resubmitted, its run moved aside), bad input (no sbatch,
an unknown partition).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytest_plugins = ["slurm_cluster"]

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_NB = ROOT / "tests" / "fixtures" / "notebooks" / "write_summary.ipynb"
TRAIN_NB = ROOT / "notebooks" / "01_train_grpo.ipynb"
SMOKE = ["-p", "warmstart_steps", "2", "-p", "max_steps", "2", "-p", "eval_size", "4", "-p", "train_sample_size",
         "16", "-p", "max_completion_length", "6"]


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "mmr1kit.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def submitted(done) -> tuple[str, str]:
    """(array job, report job) from the output of `mmr1kit sweep --submit slurm` / `--resume`."""
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("submitted: "))
    words = line.split()
    return words[words.index("array") + 1], words[words.index("report") + 2]


def test_no_sbatch_on_the_path_is_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, no Slurm
    done = cli("sweep", SUMMARY_NB, "--grid", "n=1,2", "--submit", "slurm", "--sweep-dir", tmp_path / "s", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [(
        "error: `sbatch` is not on the PATH: Slurm jobs are submitted from a machine with Slurm's client commands (a "
        "login node; `module load slurm` on some clusters); without Slurm, run the sweep here (no --submit)")]
    assert not (tmp_path / "s").exists()


@pytest.mark.slurm
def test_unknown_partition_is_refused_before_anything_is_written(slurm_cluster, tmp_path):
    done = cli("sweep", SUMMARY_NB, "--grid", "n=1,2", "--submit", "slurm", "--partition", "nope",
               "--sweep-dir", tmp_path / "s")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: sbatch refused the job array: invalid partition specified: nope"]
    assert not (tmp_path / "s").exists()
    assert slurm_cluster.run("squeue", "-h").stdout.strip() == ""


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_point_is_recorded_reported_and_resubmitted(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "fail"
    array, report = submitted(cli("sweep", SUMMARY_NB, "--grid", "n=2,1", "-p", "fail_on_n", "2", "--jobs", "1",
                                  "--no-compare", "--submit", "slurm", "--sweep-dir", sweep_dir))
    assert "ArrayTaskThrottle=1" in slurm_cluster.run("scontrol", "show", "job", array).stdout  # --jobs 1
    assert slurm_cluster.run("scontrol", "hold", f"{array}_1").returncode == 0  # waits behind --jobs 1 until released
    wait_for(lambda: attempts(sweep_dir, 0) and attempts(sweep_dir, 0)[-1]["state"] == "failed", "point 0's failure",
             slurm_cluster)
    status = cli("sweep", "--status", sweep_dir).stdout.splitlines()
    assert status[1].split()[:3] == ["n=2", "failed", f"{array}_0"]
    assert "with ValueError: n=2 fails on purpose" in status[1]
    assert status[2].split()[:3] == ["n=1", "pending", f"{array}_1"]
    assert status[3] == f"report: job {report} pending (after job array {array})"

    # resubmitted while the first report job still waits: the new report job waits for it too
    array2, report2 = submitted(done := cli("sweep", "--resume", sweep_dir, "--time", "10:00"))
    assert "(1 point(s): n=2)" in done.stdout
    assert "#SBATCH --time=10:00" in (sweep_dir / "slurm" / "array.sbatch").read_text().splitlines()  # replaced
    dependency = slurm_cluster.run("scontrol", "show", "job", report2).stdout
    assert f"afterany:{array2}_*" in dependency and f"afterany:{report}(unfulfilled)" in dependency
    assert slurm_cluster.run("scontrol", "release", f"{array}_1").returncode == 0
    slurm_cluster.wait(array, report, array2, report2)

    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["failed", "succeeded"]
    assert "with ValueError: n=2 fails on purpose" in record["points"][0]["error"]
    assert json.loads((sweep_dir / "n=1" / "summary.json").read_text())["n"] == 1
    tries = attempts(sweep_dir, 0)  # the second try started afresh: the first one's run moved aside
    assert [(a["job"], a["state"], a["exit_code"], a["resumed"]) for a in tries] == [
        (f"{array}_0", "failed", 1, False), (f"{array2}_0", "failed", 1, False)]
    assert tries[0]["moved_aside"] is None and tries[1]["moved_aside"] == str(sweep_dir / "slurm" / "attempts" / "0-1")
    assert (sweep_dir / "slurm" / "attempts" / "0-1" / "write_summary.ipynb").is_file()
    assert record["slurm"]["report"] == {  # the last report job ran last; it wrote the states, no comparison
        "job": report2, "time": record["slurm"]["report"]["time"], "points": {"failed": 1, "succeeded": 1},
        "html": None, "error": "no comparison report (--no-compare)"}
    assert not (sweep_dir / "comparison").exists()
    status = cli("sweep", "--status", sweep_dir).stdout.splitlines()
    assert status[3] == "report: no comparison report (--no-compare)"


def attempts(sweep_dir, index):
    path = sweep_dir / "slurm" / "points" / f"{index}.json"
    try:
        return json.loads(path.read_text())["attempts"]
    except (OSError, ValueError):
        return []


def wait_for(condition, what, cluster, timeout=600):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s\n{cluster.logs()}")
        time.sleep(0.1)


def steps_checkpointed(run_dir):
    path = run_dir / "checkpoints.json"
    try:
        return [c["step"] for c in json.loads(path.read_text())]
    except (OSError, ValueError):
        return []


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_of_notebook_01_on_slurm_cancelled_point_resumes_and_is_reported(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "kl"
    array, report = submitted(cli("sweep", TRAIN_NB, "--grid", "kl_approximator=k1,k3", "--grid", "seed=0,1", *SMOKE,
                                  "-p", "config_overrides", '{"save_steps": 1}', "--submit", "slurm",
                                  "--sweep-dir", sweep_dir))
    victim = sweep_dir / "kl_approximator=k1,seed=0"
    wait_for(lambda: 1 in steps_checkpointed(victim), "point 0's first checkpoint", slurm_cluster)
    assert slurm_cluster.run("scancel", f"{array}_0").returncode == 0
    first_step = (victim / "metrics.jsonl").read_text().splitlines()[0]
    slurm_cluster.wait(array, report)

    # the report job ran after the array and reports the cancelled point, not lose it
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["stopped", "succeeded", "succeeded", "succeeded"]
    assert record["points"][0]["error"].startswith("CANCELLED: stopped by SIGTERM")
    assert not (victim / "summary.json").exists()
    comparison = json.loads((sweep_dir / "comparison" / "comparison.json").read_text())
    assert (comparison["runs"], comparison["failed"]) == (4, 1)
    status = cli("sweep", "--status", sweep_dir).stdout.splitlines()
    assert status[1].split()[:3] == ["kl_approximator=k1,seed=0", "stopped", f"{array}_0"]
    assert "kept: --resume continues from it]" in status[1]

    # --resume resubmits that point only; it continues from its checkpoint
    array2, report2 = submitted(done := cli("sweep", "--resume", sweep_dir))
    assert "(1 point(s): kl_approximator=k1,seed=0)" in done.stdout
    slurm_cluster.wait(array2, report2)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["succeeded"] * 4
    attempts = json.loads((sweep_dir / "slurm" / "points" / "0.json").read_text())["attempts"]
    assert [(a["job"], a["state"], a["resumed"]) for a in attempts] == [
        (f"{array}_0", "stopped", False), (f"{array2}_0", "succeeded", True)]
    assert Path(attempts[1]["checkpoint"]).parent == victim / "checkpoints"
    rows = [json.loads(line) for line in (victim / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # every step once
    assert (victim / "metrics.jsonl").read_text().splitlines()[0] == first_step  # step 1 was not trained again
    for point in record["points"]:  # the four run folders, raw
        run = Path(point["run_dir"])
        config = json.loads((run / "config.json").read_text())
        assert (config["kl_approximator"], config["seed"], config["save_steps"]) == (
            point["parameters"]["kl_approximator"], point["parameters"]["seed"], 1)
        summary = json.loads((run / "summary.json").read_text())
        assert 0 <= summary["eval/accuracy_after"] <= 1 and summary["grpo_steps"] == 2
        assert (run / "01_train_grpo.html").stat().st_size > 10_000
    comparison = json.loads((sweep_dir / "comparison" / "comparison.json").read_text())
    assert (comparison["runs"], comparison["failed"]) == (4, 0)
    assert all(g["runs"] == {"total": 2, "failed": 0} for g in comparison["groups"])
    assert record["slurm"]["report"]["job"] == report2
    assert record["slurm"]["report"]["html"] == str(sweep_dir / "comparison" / "05_compare_runs.html")
    html = (sweep_dir / "comparison" / "05_compare_runs.html").read_text()
    assert html.count("<img") >= 4  # the sweep plot and the reward / KL / entropy curves by kl_approximator
    assert cli("sweep", "--resume", sweep_dir).stdout.splitlines()[0] == (
        "nothing to resubmit: no point failed, stopped or is left to start")
