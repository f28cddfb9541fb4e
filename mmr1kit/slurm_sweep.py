"""A sweep on a Slurm cluster: one job array (a task per grid point) and a dependent job for the comparison report.

    mmr1kit sweep NOTEBOOK --grid ... --submit slurm [--partition P] [--gpus-per-job K] [--time T] [--sbatch-arg A]
    mmr1kit sweep --status SWEEP_DIR
    mmr1kit sweep --resume SWEEP_DIR

`submit_sweep` asks `sbatch --test-only` whether the cluster takes the job (partition, GPUs, time), then writes the
sweep folder (`sweep.json`, every point `not started`), `<sweep_dir>/slurm/array.sbatch` (array task i runs
`python -m mmr1kit.slurm_sweep point SWEEP_DIR i`, which runs `mmr1kit run` into point i's run folder) and
`report.sbatch` (`python -m mmr1kit.slurm_sweep report SWEEP_DIR`: the states into `sweep.json`, then notebook 05 into
`<sweep_dir>/comparison/`), and submits the report with `--dependency=afterany:<array>`, so that failed points are
reported, not lost. Every submission, refused or not, is recorded in `sweep.json` under `slurm.submissions`; if the
report job is refused, the array is cancelled: never half a submission.

A point's state comes from its task record `<sweep_dir>/slurm/points/<i>.json` (written by the task: job id, host,
start, exit code, error, one entry per attempt), its run folder (`summary.json`: the notebook ran to its end) and the
scheduler (`squeue` while it knows the job, then `sacct`): `pending`, `running`, `succeeded`, `failed` (the notebook
failed), `stopped` (cancelled, out of time, preempted, killed: the scheduler's word is in the detail) or
`not started`. `resume_sweep` resubmits the failed, stopped and never started points as one new array with a new
report job; a task whose run folder holds a checkpoint resumes from it (`mmr1kit run --resume`), one whose folder
holds a run without one moves that run aside to `<sweep_dir>/slurm/attempts/` and starts afresh.

The Slurm commands themselves are `mmr1kit.slurm`; multi-node training is `mmr1kit.slurm_train`.
"""


from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mmr1kit.runs import write_json
from mmr1kit.slurm import LIVE, SlurmError, check_submission, command, job_states, ranges, sbatch, script_header
from mmr1kit.sweep import SweepResult, load_sweep, plan_sweep

RETRY = ("failed", "stopped", "not started")  # what --resume resubmits


# ---------------------------------------------------------------------------------------------- the job scripts


def _header(name: str, output: Path, options: dict, gpus: bool) -> list[str]:
    resources = ["--ntasks=1"]
    resources += [f"--gpus={options['gpus_per_job']}"] if gpus and options.get("gpus_per_job") else []
    return script_header(name, output, resources=resources, partition=options.get("partition"),
                         time_limit=options.get("time"), sbatch_args=options.get("sbatch_args") or [])


def sweep_scripts(result: SweepResult, options: dict) -> tuple[str, str]:
    """The texts of `array.sbatch` (task i runs point i) and `report.sbatch` (the comparison report)."""
    folder = result.sweep_dir / "slurm"
    python, sweep_dir = shlex.quote(sys.executable), shlex.quote(str(result.sweep_dir))
    body = ["set -euo pipefail", f"cd {shlex.quote(str(result.cwd))}", "export PYTHONUNBUFFERED=1"]
    array = _header(f"mmr1kit-sweep-{result.sweep_dir.name}", folder / "logs" / "%A_%a.out", options, True)
    array[1:1] = ["# Written by `mmr1kit sweep --submit slurm`: array task i runs point i of sweep.json",
                  "# (mmr1kit run into its run folder; --resume when the folder holds a checkpoint)."]
    array += body + [f'exec {python} -m mmr1kit.slurm_sweep point {sweep_dir} "$SLURM_ARRAY_TASK_ID"', ""]
    report = _header(f"mmr1kit-report-{result.sweep_dir.name}", folder / "logs" / "report-%j.out", options, False)
    report[1:1] = ["# Written by `mmr1kit sweep --submit slurm`: after the array (afterany), the points' states go",
                   "# into sweep.json and notebook 05 renders the comparison report into comparison/."]
    report += body + [f"exec {python} -m mmr1kit.slurm_sweep report {sweep_dir}", ""]
    return "\n".join(array), "\n".join(report)


# ------------------------------------------------------------------------------------------------ submitting


def submit_sweep(notebook, grid, *, parameters=None, sweep_dir=None, preset=None, cwd=None, kernel_name="python3",
                 partition=None, gpus_per_job=None, time_limit=None, sbatch_args=(), jobs=None,
                 compare: bool = True) -> SweepResult:
    """Plan a sweep (`mmr1kit.sweep.plan_sweep`) and submit it as one job array plus a dependent report job.

    Args:
        notebook, grid, parameters, sweep_dir, preset, cwd, kernel_name: as in `mmr1kit.sweep.sweep`.
        partition (`str`, *optional*): `--partition`; time_limit (`str`, *optional*): `--time` (`HH:MM:SS`, ...).
        gpus_per_job (`int`, *optional*): `--gpus` of every array task (Slurm sets its `CUDA_VISIBLE_DEVICES`).
        sbatch_args (`list[str]`): more `#SBATCH` lines for both jobs (`--account=A`, `--cpus-per-task=8`, ...).
        jobs (`int`, *optional*): at most this many array tasks at once (`--array=0-N%jobs`).
        compare (`bool`, defaults to True): False: the report job writes the states only, no comparison report.

    Raises:
        `SlurmError`: no `sbatch`, or the cluster refuses the job (checked with `sbatch --test-only` before anything is
            written); `ValueError`: bad grid or parameters.
    """
    options = {"partition": partition, "time": time_limit, "gpus_per_job": gpus_per_job,
               "sbatch_args": list(sbatch_args), "jobs": jobs, "kernel": kernel_name, "compare": compare}
    _check_options(options)
    result = plan_sweep(notebook, grid, parameters=parameters, sweep_dir=sweep_dir, preset=preset, cwd=cwd,
                        jobs=jobs, gpus_per_job=gpus_per_job, slurm={"options": options, "submissions": []})
    for point in result.points:
        point.status = "not started"
    result.save()
    _submit(result, list(range(len(result.points))))
    return result


def _check_options(options: dict) -> None:
    """Refuse bad options before anything is written: no sbatch, or a job the cluster would not take."""
    command("sbatch")
    if options["gpus_per_job"] is not None and options["gpus_per_job"] < 1:
        raise ValueError(f"--gpus-per-job must be at least 1, got {options['gpus_per_job']}")
    check_submission(_header("mmr1kit-check", Path("/dev/null"), options, True), "--array=0", what="the job array")


def _submit(result: SweepResult, indices: list[int]) -> dict:
    """Write the scripts and submit the array of `indices` and its report job; record it, refused or not."""
    options = result.record["slurm"]["options"]
    folder = result.sweep_dir / "slurm"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "points").mkdir(exist_ok=True)
    for i in indices:  # the point's parameters, typed, as the preset of its `mmr1kit run`
        point = result.points[i]
        (folder / "points" / f"{i}.yaml").write_text(yaml.safe_dump(
            {**result.record["parameters"], **point.parameters}, sort_keys=True))
    array_text, report_text = sweep_scripts(result, options)
    (folder / "array.sbatch").write_text(array_text)
    (folder / "report.sbatch").write_text(report_text)
    spec = ranges(indices) + (f"%{options['jobs']}" if options.get("jobs") else "")
    # An earlier report job still waiting or running goes first: two reports never write comparison/ at once.
    earlier = [s["report_job"] for s in result.record["slurm"]["submissions"]
               if s.get("report_job") and job_states(s["report_job"]).get(None) in LIVE]
    entry = {"time": time.time(), "indices": indices, "array_job": None, "report_job": None, "error": None}
    result.record["slurm"]["submissions"].append(entry)
    try:
        entry["array_job"] = sbatch(folder / "array.sbatch", f"--array={spec}", what="the job array")
        result.save()
        after = ":".join([entry["array_job"], *earlier])
        entry["report_job"] = sbatch(folder / "report.sbatch", f"--dependency=afterany:{after}",
                                     what="the report job")
    except SlurmError as exc:
        entry["error"] = str(exc)
        if entry["array_job"]:  # never half a submission: the array goes too
            subprocess.run([command("scancel"), entry["array_job"]], capture_output=True, check=False)
            entry["error"] += f" (job array {entry['array_job']} cancelled)"
        result.save()
        raise SlurmError(f"{exc}; nothing runs; recorded in {result.sweep_dir / 'sweep.json'}") from None
    for i in indices:
        result.points[i].status, result.points[i].error = "pending", None
    result.save()
    return entry


# ------------------------------------------------------------------------------------------------ inside the jobs


def _task_record(sweep_dir: Path, index: int) -> dict:
    path = sweep_dir / "slurm" / "points" / f"{index}.json"
    return json.loads(path.read_text()) if path.is_file() else {"index": index, "attempts": []}


def checkpoint(run_dir: Path) -> Path | None:
    """The latest complete checkpoint of a run folder (`checkpoints/checkpoint-N` with its `trainer_state.json`)."""
    found = [p.parent for p in Path(run_dir).glob("checkpoints/checkpoint-*/trainer_state.json")]
    return max(found, key=lambda p: int(p.name.rpartition("-")[2]), default=None)


def run_point(sweep_dir, index: int) -> int:
    """Array task `index`: `mmr1kit run` the point into its run folder, its outcome into its task record.

    Resumes (`--resume`) when the run folder holds a checkpoint and the notebook declares `resume_from_checkpoint`;
    a run folder that holds a run without one is moved to `<sweep_dir>/slurm/attempts/<index>-<n>` first. SIGTERM
    (scancel, time limit, preemption) is recorded as `stopped`. Returns the exit code of `mmr1kit run`.
    """
    from mmr1kit.parameters import notebook_parameters

    result = load_sweep(sweep_dir)
    point, sweep_dir = result.points[index], result.sweep_dir
    run_dir = Path(point.run_dir)
    record = _task_record(sweep_dir, index)
    latest = checkpoint(run_dir)
    resume = latest is not None and "resume_from_checkpoint" in notebook_parameters(result.notebook)
    moved = None
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        moved = sweep_dir / "slurm" / "attempts" / f"{index}-{len(record['attempts'])}"
        moved.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run_dir, moved)
    options = result.record["slurm"]["options"]
    args = [sys.executable, "-m", "mmr1kit.cli", "run", str(result.notebook),
            "-f", str(sweep_dir / "slurm" / "points" / f"{index}.yaml"), "--run-dir", str(run_dir),
            "--cwd", str(result.cwd), "--kernel", options.get("kernel") or "python3"]
    args += ["--resume"] if resume else []
    attempt = {"job": f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{index}", "job_id": os.environ.get("SLURM_JOB_ID"),
               "host": socket.gethostname(), "started": time.time(), "state": "running", "resumed": resume,
               "checkpoint": str(latest) if resume else None,
               "moved_aside": str(moved) if moved else None, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "command": shlex.join(args)}
    record["attempts"].append(attempt)
    path = sweep_dir / "slurm" / "points" / f"{index}.json"
    write_json(path, record)
    print(f"point {index} ({point.name}): {attempt['command']}", flush=True)

    caught = []
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, errors="replace")

    def stop(signum, frame):  # record it; pass it on (`scancel --batch` and some preemptions signal this process only)
        caught.append(signal.Signals(signum).name)
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    error = None
    for line in proc.stderr:  # relayed to the task's log; the last `error:` line is the point's error
        sys.stderr.write(line)
        if line.startswith("error: "):
            error = line[len("error: "):].strip()
    code = proc.wait()
    state = "succeeded" if code == 0 else "stopped" if caught or code < 0 else "failed"
    if state == "stopped":
        error = f"stopped by {caught[0] if caught else signal.Signals(-code).name} (scancel, time limit or preemption)"
    attempt.update(finished=time.time(), exit_code=code, state=state, error=error)
    write_json(path, record)
    return code if code >= 0 else 128 - code


def point_states(result: SweepResult) -> list[dict]:
    """Each point's `state` (see the module docstring), `job` (`<array>_<index>`), `detail`, and its last attempt."""
    submissions = (result.record.get("slurm") or {}).get("submissions", [])
    queried = {s["array_job"]: job_states(s["array_job"]) for s in submissions if s.get("array_job")}
    out = []
    for i, point in enumerate(result.points):
        sub = next((s for s in reversed(submissions) if i in s["indices"] and s.get("array_job")), None)
        scheduler = queried[sub["array_job"]].get(i) if sub else None
        attempts = _task_record(result.sweep_dir, i)["attempts"] if sub else []
        last = attempts[-1] if attempts else None
        last_here = last if last and sub and last["job"] == f"{sub['array_job']}_{i}" else None
        row = {"index": i, "name": point.name, "job": f"{sub['array_job']}_{i}" if sub else None,
               "scheduler": scheduler, "attempts": len(attempts), "last": last}
        if sub is None:  # a local sweep, or never submitted: what sweep.json says
            row.update(state=point.status, detail=point.error or "")
        elif scheduler in LIVE and not (last_here and last_here["state"] != "running"):
            row.update(state=LIVE[scheduler], detail="" if LIVE[scheduler] == "running" else "queued")
        elif last_here is None:
            row.update(state="not started", detail=f"the scheduler says {scheduler}" if scheduler else
                       "the task never started (cancelled while queued, or forgotten by the scheduler)")
        elif last_here["state"] == "running":  # the task ended without recording its end: killed
            row.update(state="stopped", detail=f"killed without a record ({scheduler or 'scheduler state unknown'})")
        else:
            detail = last_here.get("error") or ""
            if last_here["state"] == "stopped" and scheduler:
                detail = f"{scheduler}: {detail}"
            row.update(state=last_here["state"], detail=detail)
        kept = checkpoint(Path(point.run_dir)) if row["state"] in ("stopped", "failed") else None
        if kept is not None:
            row["detail"] += f" [{kept.name} kept: --resume continues from it]"
        out.append(row)
    return out


def refresh(sweep_dir) -> SweepResult:
    """Write every point's state and detail into `sweep.json`; return the sweep."""
    result = load_sweep(sweep_dir)
    for point, row in zip(result.points, point_states(result)):
        point.status, point.error = row["state"], row["detail"] or None
        last = row["last"]
        if last and last.get("finished"):
            point.wall_time_s = last["finished"] - last["started"]
            point.gpus = last.get("gpus")
        html = Path(point.run_dir) / f"{result.notebook.stem}.html"
        point.html = str(html) if html.is_file() else None
    result.save()
    return result


def report(sweep_dir) -> int:
    """The report job: states into `sweep.json`, then the comparison report (when a point succeeded, unless the sweep
    was submitted with --no-compare)."""
    from mmr1kit.compare import compare_report
    from mmr1kit.notebook import NotebookRunError

    result = refresh(sweep_dir)
    counts = {s: sum(p.status == s for p in result.points) for s in dict.fromkeys(p.status for p in result.points)}
    print("points: " + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
    entry = {"time": time.time(), "job": os.environ.get("SLURM_JOB_ID"), "points": counts, "html": None, "error": None}
    if result.record["slurm"]["options"].get("compare") is False:
        entry["error"] = "no comparison report (--no-compare)"
    elif not counts.get("succeeded"):
        entry["error"] = "no point succeeded: no comparison report"
    else:
        kernel = result.record["slurm"]["options"].get("kernel") or "python3"
        try:
            entry["html"] = str(compare_report(result.sweep_dir, kernel_name=kernel).html)
        except (NotebookRunError, OSError, ValueError) as exc:
            entry["error"] = f"the comparison report failed: {exc}"
    result.record["slurm"]["report"] = entry
    result.save()
    print(entry["html"] or entry["error"], flush=True)
    return 0 if entry["html"] or "--no-compare" in entry["error"] else 1


def resume_sweep(sweep_dir, *, partition=None, gpus_per_job=None, time_limit=None, sbatch_args=None) -> dict | None:
    """Resubmit the failed, stopped and never started points of a submitted sweep, with a new report job.

    Options given here replace the recorded ones. Returns the submission, or None when there is nothing to resubmit.

    Raises:
        `ValueError`: the sweep was not submitted to Slurm. `SlurmError`: as in `submit_sweep`.
    """
    result = load_sweep(sweep_dir)
    if "slurm" not in result.record:
        raise ValueError(f"{result.sweep_dir} ran on this machine, not through --submit slurm: run the points again "
                         f"with `mmr1kit run NOTEBOOK --run-dir POINT_FOLDER --resume`")
    options = result.record["slurm"]["options"]
    for key, value in (("partition", partition), ("gpus_per_job", gpus_per_job), ("time", time_limit),
                       ("sbatch_args", sbatch_args)):
        if value:
            options[key] = list(value) if key == "sbatch_args" else value
    _check_options(options)
    states = point_states(result)
    todo = [row["index"] for row in states if row["state"] in RETRY]
    if not todo:
        return None
    return _submit(result, todo)


def format_states(result: SweepResult, states: list[dict]) -> list[str]:
    """The `mmr1kit sweep --status` table: a line per point, then the report's line."""
    width = max(len(r["name"]) for r in states)
    lines = [f"{'point':<{width}}  {'state':<11}  {'job':<10}  detail"]
    lines += [f"{r['name']:<{width}}  {r['state']:<11}  {r['job'] or '-':<10}  {r['detail']}".rstrip() for r in states]
    slurm = result.record.get("slurm") or {}
    last = next((s for s in reversed(slurm.get("submissions", [])) if s.get("report_job")), None)
    done = slurm.get("report") or {}
    if last is not None:
        state = job_states(last["report_job"]).get(None)
        if state in LIVE:
            lines.append(f"report: job {last['report_job']} {LIVE[state]} (after job array {last['array_job']})")
        elif done.get("job") == last["report_job"]:
            lines.append(f"report: {done['html'] or done['error']}")
        else:
            lines.append(f"report: job {last['report_job']} ended ({state or 'state unknown'}) without writing one")
    return lines


def main(argv=None) -> int:
    """`python -m mmr1kit.slurm_sweep point SWEEP_DIR INDEX` | `report SWEEP_DIR`: what the job scripts run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 3 and argv[0] == "point":
        return run_point(argv[1], int(argv[2]))
    if len(argv) == 2 and argv[0] == "report":
        return report(argv[1])
    print("usage: python -m mmr1kit.slurm_sweep point SWEEP_DIR INDEX | report SWEEP_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
