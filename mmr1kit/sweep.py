"""Sweeps: run a parameterized notebook on every point of a grid, one run folder per point.

`sweep` runs the cartesian product of a grid through `mmr1kit.notebook.run_notebook` and records every point in
`<sweep_dir>/sweep.json`; a failing point does not stop the others. `plan_sweep` checks the grid and writes that
record without running anything (`mmr1kit.slurm` submits a planned sweep as a job array). `parse_grid` reads a
command-line grid (`"name=v1,v2,v3"`).

GPUs: with `gpus_per_job=K`, each running point sees its own K GPUs through `CUDA_VISIBLE_DEVICES`, and at most
`len(visible_gpus()) // K` points run at once. `visible_gpus` reads the GPUs this process may use from
`CUDA_VISIBLE_DEVICES` (which Slurm sets inside a GPU allocation; setting it is also how a test or a user hands a
sweep a subset of the node's GPUs), else from `nvidia-smi`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmr1kit.notebook import NotebookRunError, _default_run_dir, _repo_root, run_notebook
from mmr1kit.parameters import check_parameters, notebook_parameters, resolve_parameters
from mmr1kit.preflight import check_notebook_parameters
from mmr1kit.runs import write_json

logger = logging.getLogger(__name__)


@dataclass
class SweepPoint:
    """One grid point of a sweep."""

    name: str
    parameters: dict[str, Any]  # grid values of this point
    run_dir: str
    status: str = "pending"  # pending | succeeded | failed (mmr1kit.slurm adds running | stopped | not started)
    error: str | None = None
    wall_time_s: float | None = None
    html: str | None = None
    gpus: str | None = None  # the CUDA_VISIBLE_DEVICES the point ran with (None: unset)


@dataclass
class SweepResult:
    """A finished sweep; `sweep_dir/sweep.json` holds the same records."""

    sweep_dir: Path
    notebook: Path
    points: list[SweepPoint] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # the rest of sweep.json: notebook, grid, parameters, ...

    @property
    def failed(self) -> list[SweepPoint]:
        return [p for p in self.points if p.status != "succeeded"]

    @property
    def cwd(self) -> Path:
        """The kernels' working directory (the repository that holds the notebook, unless `cwd` was given)."""
        return Path(self.record["cwd"]) if self.record.get("cwd") else _repo_root(self.notebook)

    def save(self) -> Path:
        """Write `<sweep_dir>/sweep.json` (atomically)."""
        return write_json(self.sweep_dir / "sweep.json", {**self.record, "points": [asdict(p) for p in self.points]})


def load_sweep(sweep_dir: str | os.PathLike) -> SweepResult:
    """Read a sweep folder's `sweep.json` back."""
    sweep_dir = Path(sweep_dir).resolve()
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder: it has no sweep.json")
    record = json.loads(path.read_text())
    known = set(SweepPoint.__dataclass_fields__)
    points = [SweepPoint(**{k: v for k, v in p.items() if k in known}) for p in record.pop("points")]
    return SweepResult(sweep_dir, Path(record["notebook"]), points, record)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` names them (indices or UUIDs).

    `CUDA_VISIBLE_DEVICES` when it is set (an empty value, `-1` or Slurm's `NoDevFiles` mean none; CUDA ignores
    the devices after an invalid one, so does this), else the indices `nvidia-smi` lists, else none.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for name in (n.strip() for n in listed.split(",")):
            if not name or name == "NoDevFiles" or name.startswith("-"):
                break
            gpus.append(name)
        return gpus
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    done = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                          check=False)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def gpu_groups(gpus_per_job: int, jobs: int | None = None) -> list[str]:
    """`CUDA_VISIBLE_DEVICES` values for the points that run at once: `min(jobs, GPUs // gpus_per_job)` disjoint
    groups of `gpus_per_job` visible GPUs each (`jobs=None`: as many as the GPUs allow).

    Raises:
        `ValueError`: `gpus_per_job < 1`, or fewer visible GPUs than `gpus_per_job` (on a CPU machine: none).
    """
    if gpus_per_job < 1:
        raise ValueError(f"--gpus-per-job must be at least 1, got {gpus_per_job}")
    gpus = visible_gpus()
    if len(gpus) < gpus_per_job:
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            seen = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
        else:
            seen = ("nvidia-smi lists none" if shutil.which("nvidia-smi")
                    else "no nvidia-smi, CUDA_VISIBLE_DEVICES unset")
        raise ValueError(f"--gpus-per-job {gpus_per_job}: this machine shows {len(gpus)} GPU(s) ({seen}); "
                         f"drop --gpus-per-job to run on CPUs, or submit to a GPU cluster with --submit slurm")
    count = min(jobs or len(gpus), len(gpus) // gpus_per_job)
    if jobs is not None and count < jobs:
        logger.info("--jobs %d with %d GPU(s) per job on %d GPU(s): %d point(s) run at once", jobs, gpus_per_job,
                    len(gpus), count)
    return [",".join(gpus[i * gpus_per_job:(i + 1) * gpus_per_job]) for i in range(count)]


def parse_grid(spec: str, declared: Mapping[str, Mapping[str, Any]] | None = None, *,
               notebook: str | os.PathLike | None = None) -> tuple[str, list[Any]]:
    """Parse `"name=v1,v2,v3"` into `(name, values)`; commas inside brackets do not split (`"xs=[1,2],[3]"`).

    With `declared` (or `notebook`), values are checked and coerced to the parameter's type.
    """
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ValueError(f"grid {spec!r} must look like 'name=v1,v2,v3'")
    values, depth, current = [], 0, ""
    for ch in rest:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    if notebook is not None or declared is not None:
        declared = notebook_parameters(notebook) if declared is None else declared
        values = [check_parameters(notebook or "notebook", {name: v}, declared=declared)[name] for v in values]
    return name, values


def check_grid(notebook, grid: Mapping[str, list], base: Mapping[str, Any], declared, cwd=None) -> None:
    """Check every point of the grid as `run_notebook` will (`mmr1kit.preflight`); raise one `ValueError` with a line
    per distinct problem, naming the first point that has it."""
    problems: dict[str, str] = {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        for line in check_notebook_parameters(notebook, {**base, **values}, declared, cwd):
            problems.setdefault(line, _point_name(values))
    if problems:
        raise ValueError("\n".join(f"grid point {point}: {line}" for line, point in problems.items()))


def _point_name(values: Mapping[str, Any]) -> str:
    def text(v):
        return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, tuple, dict)) else str(v)

    name = ",".join(f"{k}={text(v)}" for k, v in values.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:200]


def _claim_gpus(groups) -> None:
    """Process-pool initializer: this worker keeps one GPU group for its life (the pool has one worker per group)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = groups.get(timeout=60)


def _run_point(notebook: str, parameters: dict, run_dir: str, kernel_name: str, cwd: str | None,
               log_output: bool, progress: bool) -> dict[str, Any]:
    """Run one sweep point; never raises (a process-pool worker). The kernel inherits this process's
    `CUDA_VISIBLE_DEVICES`."""
    outcome = _run_point_outcome(notebook, parameters, run_dir, kernel_name, cwd, log_output, progress)
    return {**outcome, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _run_point_outcome(notebook, parameters, run_dir, kernel_name, cwd, log_output, progress) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = run_notebook(notebook, parameters=parameters, run_dir=run_dir, kernel_name=kernel_name, cwd=cwd,
                              log_output=log_output, progress=progress)
        return {"status": "succeeded", "error": None, "wall_time_s": result.wall_time_s, "html": str(result.html)}
    except NotebookRunError as exc:
        return {"status": "failed", "error": exc.summary, "wall_time_s": time.perf_counter() - start,
                "html": str(exc.html) if exc.html else None}
    except Exception as exc:  # noqa: BLE001 - record it; the other points go on
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "wall_time_s": time.perf_counter() - start,
                "html": None}


def plan_sweep(notebook: str | os.PathLike, grid: Mapping[str, list], *,
               parameters: Mapping[str, Any] | None = None, sweep_dir: str | os.PathLike | None = None,
               preset: str | os.PathLike | Mapping[str, Any] | None = None, cwd: str | os.PathLike | None = None,
               **record) -> SweepResult:
    """Check a sweep and write its `sweep.json` with every point `pending`; run nothing.

    Arguments as in `sweep`; `record` adds fields to `sweep.json` (`jobs`, `gpus_per_job`, `slurm`).

    Raises:
        `ValueError`: bad grid or parameters; nothing is written then.
    """
    notebook = Path(notebook).resolve()
    declared = notebook_parameters(notebook)
    root = Path(cwd).resolve() if cwd is not None else _repo_root(notebook)
    if not grid or any(not list(v) for v in grid.values()):
        raise ValueError(f"grid must map parameter names to non-empty lists of values, got {dict(grid)!r}")
    if "run_dir" in grid or "run_dir" in (parameters or {}):
        raise ValueError("a sweep gives every point its own run_dir under the sweep folder; do not set run_dir")
    clash = sorted(set(grid) & set(parameters or {}))
    if clash:
        raise ValueError(f"{', '.join(map(repr, clash))} given both in the grid and as a parameter")
    base = resolve_parameters(notebook, parameters, preset, declared=declared, search_root=root)
    base.pop("run_dir", None)
    grid = {k: [check_parameters(notebook, {k: v}, declared=declared)[k] for v in values]
            for k, values in grid.items()}
    check_grid(notebook, grid, base, declared, root)
    sweep_dir = Path(sweep_dir if sweep_dir is not None else _default_run_dir(notebook, "-sweep")).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    points, seen = [], set()
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        name = _point_name(values)
        while name in seen:
            name += "+"
        seen.add(name)
        points.append(SweepPoint(name=name, parameters=values, run_dir=str(sweep_dir / name)))
    result = SweepResult(sweep_dir, notebook, points, {"notebook": str(notebook), "grid": grid, "parameters": base,
                                                       "cwd": str(root), **record})
    result.save()
    return result


def sweep(notebook: str | os.PathLike, grid: Mapping[str, list], *, parameters: Mapping[str, Any] | None = None,
          sweep_dir: str | os.PathLike | None = None, jobs: int | None = 1,
          preset: str | os.PathLike | Mapping[str, Any] | None = None, kernel_name: str = "python3",
          cwd: str | os.PathLike | None = None, log_output: bool = False, progress: bool | None = None,
          gpus_per_job: int | None = None) -> SweepResult:
    """Run a notebook on every point of the cartesian product of `grid`, one run folder per point.

    Args:
        notebook (`str` or `os.PathLike`): the source notebook.
        grid (`Mapping[str, list]`): parameter name → values (strings are coerced to the parameter's type).
        parameters (`Mapping[str, Any]`, *optional*): values shared by all points (they may not repeat a grid name
            or set `run_dir`).
        sweep_dir (`str` or `os.PathLike`, *optional*): defaults to `runs/<stem>-sweep-<YYYYmmdd-HHMMSS>`. Point
            `k1=v1,k2=v2` runs in `<sweep_dir>/k1=v1,k2=v2` (characters outside `[A-Za-z0-9._=,+-]` become `_`).
        jobs (`int`, *optional*, defaults to 1): points run at once (a process pool when > 1); None with
            `gpus_per_job`: as many as the GPUs allow.
        preset, kernel_name, cwd, log_output: as in `run_notebook`.
        progress (`bool`, *optional*): papermill progress bars; defaults to `jobs == 1`.
        gpus_per_job (`int`, *optional*): give each running point its own `gpus_per_job` GPUs
            (`CUDA_VISIBLE_DEVICES`); at most `len(visible_gpus()) // gpus_per_job` points run at once.

    Returns:
        `SweepResult`. `<sweep_dir>/sweep.json` is rewritten (atomically) after every point.

    Raises:
        `ValueError`: bad grid or parameters, or `gpus_per_job` with fewer visible GPUs (raised before anything
            runs). A failing point is recorded with `status="failed"` and its error; the others still run.
    """
    groups = gpu_groups(gpus_per_job, jobs) if gpus_per_job is not None else None
    jobs = len(groups) if groups is not None else jobs or 1
    result = plan_sweep(notebook, grid, parameters=parameters, sweep_dir=sweep_dir, preset=preset, cwd=cwd,
                        jobs=jobs, gpus_per_job=gpus_per_job)
    points = result.points

    def finish(i, outcome):
        points[i].__dict__.update(outcome)
        result.save()
        logger.info("[%d/%d] %s: %s (%.1f s)%s", sum(p.status != "pending" for p in points), len(points),
                    points[i].name, points[i].status, points[i].wall_time_s or 0.0,
                    f" {points[i].error}" if points[i].error else "")

    progress = jobs <= 1 if progress is None else progress
    base = result.record["parameters"]
    args = [(str(result.notebook), {**base, **p.parameters}, p.run_dir, kernel_name, str(result.cwd), log_output,
             progress) for p in points]
    if jobs <= 1 and groups is None:
        for i, a in enumerate(args):
            finish(i, _run_point(*a))
        return result
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    initializer, initargs = None, ()
    if groups is not None:  # one worker per GPU group, each keeping its group
        queue = context.Queue()
        for group in groups:
            queue.put(group)
        initializer, initargs = _claim_gpus, (queue,)
    with ProcessPoolExecutor(max_workers=min(jobs, len(points)), mp_context=context, initializer=initializer,
                             initargs=initargs) as pool:
        futures = {pool.submit(_run_point, *a): i for i, a in enumerate(args)}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (e.g. out of memory): record it
                outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            finish(futures[future], outcome)
    return result
