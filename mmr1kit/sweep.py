"""Sweeps: run a parameterized notebook on every point of a grid, one run folder per point.

`sweep` runs the cartesian product of a grid through `mmr1kit.notebook.run_notebook` and records every point in
`<sweep_dir>/sweep.json`; a failing point does not stop the others. `parse_grid` reads a command-line grid
(`"name=v1,v2,v3"`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
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
    status: str = "pending"  # pending | succeeded | failed
    error: str | None = None
    wall_time_s: float | None = None
    html: str | None = None


@dataclass
class SweepResult:
    """A finished sweep; `sweep_dir/sweep.json` holds the same records."""

    sweep_dir: Path
    notebook: Path
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def failed(self) -> list[SweepPoint]:
        return [p for p in self.points if p.status != "succeeded"]


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


def _run_point(notebook: str, parameters: dict, run_dir: str, kernel_name: str, cwd: str | None,
               log_output: bool, progress: bool) -> dict[str, Any]:
    """Run one sweep point; never raises (a process-pool worker)."""
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


def sweep(notebook: str | os.PathLike, grid: Mapping[str, list], *, parameters: Mapping[str, Any] | None = None,
          sweep_dir: str | os.PathLike | None = None, jobs: int = 1,
          preset: str | os.PathLike | Mapping[str, Any] | None = None, kernel_name: str = "python3",
          cwd: str | os.PathLike | None = None, log_output: bool = False, progress: bool | None = None
          ) -> SweepResult:
    """Run a notebook on every point of the cartesian product of `grid`, one run folder per point.

    Args:
        notebook (`str` or `os.PathLike`): the source notebook.
        grid (`Mapping[str, list]`): parameter name → values (strings are coerced to the parameter's type).
        parameters (`Mapping[str, Any]`, *optional*): values shared by all points (they may not repeat a grid name
            or set `run_dir`).
        sweep_dir (`str` or `os.PathLike`, *optional*): defaults to `runs/<stem>-sweep-<YYYYmmdd-HHMMSS>`. Point
            `k1=v1,k2=v2` runs in `<sweep_dir>/k1=v1,k2=v2` (characters outside `[A-Za-z0-9._=,+-]` become `_`).
        jobs (`int`, *optional*, defaults to 1): points run at once (a process pool when > 1).
        preset, kernel_name, cwd, log_output: as in `run_notebook`.
        progress (`bool`, *optional*): papermill progress bars; defaults to `jobs == 1`.

    Returns:
        `SweepResult`. `<sweep_dir>/sweep.json` is rewritten (atomically) after every point.

    Raises:
        `ValueError`: bad grid or parameters (raised before anything runs). A failing point is recorded with
            `status="failed"` and its error; the others still run.
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
    result = SweepResult(sweep_dir, notebook, points)
    record = {"notebook": str(notebook), "grid": grid, "parameters": base, "jobs": jobs}

    def save():
        write_json(sweep_dir / "sweep.json", {**record, "points": [asdict(p) for p in points]})

    def finish(i, outcome):
        points[i].__dict__.update(outcome)
        save()
        logger.info("[%d/%d] %s: %s (%.1f s)%s", sum(p.status != "pending" for p in points), len(points),
                    points[i].name, points[i].status, points[i].wall_time_s or 0.0,
                    f" {points[i].error}" if points[i].error else "")

    save()
    progress = jobs <= 1 if progress is None else progress
    args = [(str(notebook), {**base, **p.parameters}, p.run_dir, kernel_name, str(root), log_output, progress)
            for p in points]
    if jobs <= 1:
        for i, a in enumerate(args):
            finish(i, _run_point(*a))
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=min(jobs, len(points)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_point, *a): i for i, a in enumerate(args)}
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (e.g. out of memory): record it
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                finish(futures[future], outcome)
    return result
