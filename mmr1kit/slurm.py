"""Slurm's commands as mmr1kit uses them: submit (`sbatch`), ask (`squeue`, `sacct`), expand node lists (`scontrol`).

No home-made scheduler (design decision 8): sweeps go to Slurm as job arrays (`mmr1kit.slurm_sweep`), multi-node
training as one job with an `accelerate launch` per node (`mmr1kit.slurm_train`). This module holds what both need:
`command` (a missing command is one line), `sbatch` (a refusal is one line: Slurm's own reason), `job_states`,
`hostnames`, and the `#SBATCH` header of the generated job scripts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

LIVE = {"PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
        "REQUEUE_FED": "pending", "RESV_DEL_HOLD": "pending", "SUSPENDED": "pending", "RUNNING": "running",
        "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running"}


class SlurmError(RuntimeError):
    """A Slurm command is missing or refused something; the message is one line."""


# ------------------------------------------------------------------------------------------ the scheduler's commands


def command(name: str) -> str:
    """The path of a Slurm command, or `SlurmError` saying it is not on the PATH."""
    path = shutil.which(name)
    if path is None:
        raise SlurmError(f"`{name}` is not on the PATH: Slurm jobs are submitted from a machine with Slurm's client "
                         f"commands (a login node; `module load slurm` on some clusters); without Slurm, run the "
                         f"sweep here (no --submit)")
    return path


def _said(text: str) -> str:
    """The most telling line of a Slurm command's stderr, without the `sbatch: error: ` prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or ["(no message)"]
    return re.sub(r"^\w+: (error: |fatal: )?", "", errors[0])


def _call(args: list[str], what: str, stdin: str | None = None) -> str:
    """Run a Slurm command; its stdout, or `SlurmError` with the reason it gave."""
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SlurmError(f"{Path(args[0]).name} refused {what}: {_said(done.stderr or done.stdout)}")
    return done.stdout


def sbatch(script: Path | str, *options: str, what: str = "the job") -> str:
    """Submit `script` (a path, or the script's text through stdin); return the job id (`SlurmError` if refused;
    "" with `--test-only`)."""
    path = Path(script) if not str(script).startswith("#!") else None
    args = [command("sbatch"), "--parsable", *options] + ([str(path)] if path else [])
    out = _call(args, what, stdin=None if path else str(script))
    return "" if "--test-only" in options else out.strip().split(";")[0]


def hostnames(nodelist: str) -> list[str]:
    """`scontrol show hostnames NODELIST`: Slurm's compressed node list (`gpu[01-03,07]`) as host names."""
    return _call([command("scontrol"), "show", "hostnames", nodelist], f"the node list {nodelist!r}").split()


def _task_ids(spec: str) -> list[int]:
    """Array task ids of `squeue`'s / `sacct`'s `12_[0-3,5%2]` or `12_4` suffix."""
    ids = []
    for part in spec.strip("[]").split("%")[0].split(","):
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        if first.isdigit():
            ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def job_states(job_id: str) -> dict[int | None, str]:
    """Scheduler states of a job (`{None: state}`) or of the tasks of a job array (`{task: state}`).

    `squeue` (queued, running, and ended jobs it still remembers), then `sacct` for jobs it has forgotten (needs
    accounting; without it, {} for those). States are Slurm's words: `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`,
    `CANCELLED`, `TIMEOUT`, `PREEMPTED`, `NODE_FAIL`, `OUT_OF_MEMORY`, ...
    """
    states: dict[int | None, str] = {}
    for args in (["squeue", "-h", "-r", "--states=all", "-j", job_id, "-o", "%i|%T"],
                 ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"]):
        if shutil.which(args[0]) is None:
            continue
        # an unknown job, or sacct without accounting: rc != 0
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            jid, _, state = line.strip().partition("|")
            base, _, task = jid.partition("_")
            if base == job_id and state.split():  # sacct: "CANCELLED by 0"
                for t in _task_ids(task) if task else [None]:
                    states.setdefault(t, state.split()[0])
        if states:
            break
    return states


def script_header(name: str, output: Path | str, *, resources=(), partition: str | None = None,
                  time_limit: str | None = None, sbatch_args=()) -> list[str]:
    """The first lines of a job script: `#SBATCH` job name, output file, `resources`, partition, time, then the
    user's `sbatch_args` (last, so that they win over ours)."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={output}"]
    lines += [f"#SBATCH {r}" for r in resources]
    lines += [f"#SBATCH --partition={partition}"] if partition else []
    lines += [f"#SBATCH --time={time_limit}"] if time_limit else []
    return lines + [f"#SBATCH {arg}" for arg in sbatch_args]


def check_submission(header: list[str], *options: str, what: str = "the job") -> None:
    """Ask the cluster whether it would take a job with this header (`sbatch --test-only`), submitting nothing.

    Raises:
        `SlurmError`: no `sbatch`, or the cluster refuses (unknown partition, GPUs it does not have, a bad time).
        `ValueError`: an `--sbatch-arg` that is not an option.
    """
    bad = [line[len("#SBATCH "):] for line in header if line.startswith("#SBATCH ") and
           not line[len("#SBATCH "):].startswith("-")]
    if bad:
        raise ValueError(f"--sbatch-arg {bad[0]!r}: expected an sbatch option, e.g. --sbatch-arg=--account=A")
    sbatch("\n".join([*header, "true", ""]), "--test-only", *options, what=what)


def ranges(indices: list[int]) -> str:
    """`[0, 1, 2, 5]` → `"0-2,5"` (sbatch's --array syntax)."""
    parts, start = [], None
    for i, index in enumerate(indices):
        start = index if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(f"{start}-{index}" if index > start else str(start))
            start = None
    return ",".join(parts)
