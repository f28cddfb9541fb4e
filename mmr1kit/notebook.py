"""Run notebooks headlessly through papermill into run folders, and always leave a readable report.

1. `run_notebook` merges a YAML preset with the parameters and checks them (`mmr1kit.parameters`: unknown names
   and uncoercible values fail before anything runs), executes into `<run_dir>/<notebook name>` and renders
   `<run_dir>/<stem>.html`, also when a cell fails (the partial notebook keeps papermill's error markers).
2. `mmr1kit.sweep.sweep` runs the cartesian product of a grid, one run folder per point, and records every point in
   `<sweep_dir>/sweep.json`; a failing point does not stop the others. Its names (`sweep`, `parse_grid`,
   `SweepPoint`, `SweepResult`) are also importable from this module, as are the parameter functions.
3. `use_project_root`, called at the top of every notebook, gives relative paths the same meaning in JupyterLab as
   under `mmr1kit run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from mmr1kit import noise
from mmr1kit.parameters import (  # noqa: F401 - check_parameters, load_preset, parameter_type: importable from here
    _display,
    check_parameters,
    load_preset,
    notebook_parameters,
    parameter_type,
    resolve_parameters,
)

logger = logging.getLogger(__name__)

ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill.execute.ERROR_MARKER_TAG


# ----------------------------------------------------------------------------------------------------------------
# Running one notebook


@dataclass
class RunResult:
    """A finished notebook run."""

    run_dir: Path
    notebook: Path  # the executed .ipynb
    html: Path
    parameters: dict[str, Any]  # the values injected into the notebook
    wall_time_s: float


class NotebookRunError(RuntimeError):
    """A notebook cell raised. The partial notebook and its HTML rendering are kept in `run_dir`.

    Attributes: `notebook` (source), `run_dir`, `output_notebook`, `html` (None if it could not be rendered),
    `cell_index` (papermill's index of the failing cell in the executed notebook, before its error markers),
    `exec_count` (the `In [n]` number), `code_cell` (1-based number of the failing code cell in the source
    notebook), `ename`, `evalue`, `traceback` (list of lines).
    """

    def __init__(self, *, notebook, run_dir, output_notebook, html, cell_index, exec_count, code_cell,
                 ename, evalue, traceback):
        self.notebook, self.run_dir, self.output_notebook, self.html = notebook, run_dir, output_notebook, html
        self.cell_index, self.exec_count, self.code_cell = cell_index, exec_count, code_cell
        self.ename, self.evalue, self.traceback = ename, evalue, traceback
        super().__init__(str(self))

    @property
    def summary(self) -> str:
        """`"ename: evalue (code cell n)"`, short enough for a table."""
        where = f" (code cell {self.code_cell})" if self.code_cell else ""
        return f"{self.ename}: {self.evalue}{where}"

    def __str__(self) -> str:
        cell = f" in code cell {self.code_cell}" if self.code_cell is not None else ""
        if self.exec_count is not None:
            cell += f" (In [{self.exec_count}] of the executed notebook)"
        html = _display(self.html) if self.html else "(not rendered)"
        evalue = " ".join(str(self.evalue).split()).rstrip(".")  # one paragraph
        return (f"{_display(self.notebook)} failed{cell} with {self.ename}: {evalue}. "
                f"Partial notebook: {_display(self.output_notebook)}; HTML report: {html}; "
                f"run folder: {_display(self.run_dir)}.")


class NotebookInterrupted(NotebookRunError):
    """The notebook stopped on Ctrl-C (`mmr1kit.interrupt`): training ended at the end of a step, with a checkpoint;
    the partial notebook and its HTML report are kept."""


def render_html(executed_ipynb: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Render an executed notebook to one standalone HTML file (images embedded as base64).

    Args:
        executed_ipynb (`str` or `os.PathLike`): the notebook to render.
        html_path (`str` or `os.PathLike`, *optional*): defaults to the notebook path with suffix `.html`.

    Returns:
        `Path`: the HTML file.
    """
    from nbconvert import HTMLExporter

    executed_ipynb = Path(executed_ipynb)
    html_path = Path(html_path) if html_path is not None else executed_ipynb.with_suffix(".html")
    nb = nbformat.read(executed_ipynb, as_version=4)
    # Saved widget state makes nbconvert load widget JavaScript from a CDN; without it the widgets' text/html
    # fallback renders, so the report stays readable offline.
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter(embed_images=True, log=noise.report_log()).from_notebook_node(nb, resources={"metadata": {
        "name": executed_ipynb.stem}})
    tmp = html_path.with_name(html_path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, html_path)
    return html_path


def run_notebook(notebook: str | os.PathLike, *, parameters: Mapping[str, Any] | None = None,
                 preset: str | os.PathLike | Mapping[str, Any] | None = None,
                 run_dir: str | os.PathLike | None = None, kernel_name: str = "python3",
                 cwd: str | os.PathLike | None = None, log_output: bool = True, progress: bool = True,
                 execution_timeout: int | None = None, resume: bool = False, overwrite: bool = False,
                 allow_changes: tuple[str, ...] = ()) -> RunResult:
    """Execute a notebook with papermill into a run folder and render its HTML report.

    Args:
        notebook (`str` or `os.PathLike`): the source notebook.
        parameters (`Mapping[str, Any]`, *optional*): values for declared parameters; strings are coerced.
        preset (`str`, `os.PathLike` or `Mapping`, *optional*): YAML preset (a flat mapping) or `NAME` for
            `configs/NAME.yaml`; `parameters` override it.
        run_dir (`str` or `os.PathLike`, *optional*): defaults to `parameters["run_dir"]`, then the preset's
            `run_dir`, then `runs/<notebook stem>-<YYYYmmdd-HHMMSS>`. Relative paths are relative to the current
            directory; the absolute path is injected as the `run_dir` parameter when the notebook declares one.
        kernel_name (`str`, *optional*, defaults to `"python3"`): Jupyter kernel.
        cwd (`str` or `os.PathLike`, *optional*): working directory of the kernel; defaults to the repository that
            holds the notebook (nearest parent with `pyproject.toml` or `.git`), else the current directory.
        log_output (`bool`, *optional*, defaults to `True`): log cell outputs (papermill `--log-output`).
        progress (`bool`, *optional*, defaults to `True`): show papermill's progress bar.
        execution_timeout (`int`, *optional*): seconds allowed per cell.
        resume (`bool`, *optional*): continue the run in `run_dir` with the parameters of its executed notebook
            (a notebook that declares `resume_from_checkpoint`); `parameters` that differ from them are refused
            unless named in `allow_changes`.
        overwrite (`bool`, *optional*): move a run already in `run_dir` aside (to `<run_dir>.old-<time>`).

    Returns:
        `RunResult`

    Raises:
        `ValueError`: bad notebook parameters cell, unknown parameter names, values of the wrong type or out of
            range, a run folder that holds another run (`mmr1kit.preflight`: all raised before anything runs).
            `NotebookRunError`: a cell failed; the partial notebook and HTML are kept. `NotebookInterrupted`: Ctrl-C.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from mmr1kit.interrupt import forward_interrupts
    from mmr1kit.preflight import prepare_notebook_run

    notebook = Path(notebook).resolve()
    declared = notebook_parameters(notebook)
    cwd = Path(cwd).resolve() if cwd is not None else _repo_root(notebook)
    params = resolve_parameters(notebook, parameters, preset, declared=declared, search_root=cwd)
    given_run_dir = params.pop("run_dir", None)
    run_dir = Path(run_dir if run_dir is not None else given_run_dir or _default_run_dir(notebook)).resolve()
    if "run_dir" in declared:
        params["run_dir"] = str(run_dir)
    params = prepare_notebook_run(notebook, params, declared, run_dir, cwd=cwd, resume=resume, overwrite=overwrite,
                                  allow_changes=allow_changes)
    run_dir.mkdir(parents=True, exist_ok=True)
    output = run_dir / notebook.name
    html = run_dir / f"{notebook.stem}.html"

    start, error = time.perf_counter(), None
    engine_kwargs = {"execution_timeout": execution_timeout} if execution_timeout is not None else {}
    try:
        bar = noise.show_progress_bar(progress)
        # Ctrl-C goes to the kernel, which stops training at the end of a step
        with _headless_kernel(), forward_interrupts() as interrupts, noise.kernel_config() as kernel, \
                noise.quiet_papermill(bar and log_output):
            pm.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel_name,
                                cwd=str(cwd), log_output=log_output, progress_bar=bar, **engine_kwargs, **kernel)
    except Exception as exc:  # noqa: BLE001 - any failure still gets its report rendered, then is re-raised
        error = exc
    wall = time.perf_counter() - start
    if error is None:
        return RunResult(run_dir, output, render_html(output, html), params, wall)

    try:
        html_done = render_html(output, html) if output.is_file() else None
    except Exception as exc:  # noqa: BLE001 - do not hide the notebook's error behind a rendering error
        logger.warning("could not render %s: %s", output, exc)
        html_done = None
    if isinstance(error, PapermillExecutionError):
        info = {"cell_index": error.cell_index, "exec_count": error.exec_count, "ename": error.ename,
                "evalue": error.evalue, "traceback": [_strip_ansi(t) for t in error.traceback or []]}
    else:
        info = {"cell_index": None, "exec_count": None, "ename": type(error).__name__, "evalue": str(error),
                "traceback": []}
    code_cell, exec_count = _locate_failure(output)
    info["exec_count"] = info["exec_count"] or exec_count
    interrupted = interrupts["count"] > 0 or info["ename"] in ("TrainingInterrupted", "KeyboardInterrupt")
    raise (NotebookInterrupted if interrupted else NotebookRunError)(notebook=notebook, run_dir=run_dir, output_notebook=output, html=html_done,
                           code_cell=code_cell, **info) from error


def _locate_failure(output: Path) -> tuple[int | None, int | None]:
    """(1-based number of the failing code cell in the *source* notebook, its execution count) of a partial run.

    The failing cell follows papermill's error anchor; without one (a timeout, a dead kernel) it is the first code
    cell with an error output.
    """
    try:
        cells = nbformat.read(output, as_version=4).cells
    except Exception:  # noqa: BLE001 - no readable partial notebook, nothing to locate
        return None, None
    number, after_anchor = 0, False
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if ERROR_MARKER_TAG in tags:
            after_anchor = after_anchor or 'id="papermill-error-cell"' in cell.source
            continue
        if cell.cell_type != "code":
            continue
        number += "injected-parameters" not in tags
        if after_anchor or any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return number, cell.get("execution_count")
    return None, None


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def find_executed_notebooks(run_dir: str | os.PathLike) -> list[Path]:
    """Executed notebooks of a run folder (`*.ipynb`), or of each point of a sweep folder (`*/*.ipynb`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {_display(run_dir)} does not exist")
    found = sorted(run_dir.glob("*.ipynb")) or sorted(run_dir.glob("*/*.ipynb"))
    found = [p for p in found if ".ipynb_checkpoints" not in p.parts]
    if not found:
        raise FileNotFoundError(f"no executed notebook (*.ipynb) in {_display(run_dir)}")
    return found


def _default_run_dir(notebook: Path, suffix: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{notebook.stem}{suffix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{notebook.stem}{suffix}-{stamp}-{n}"
    return path


def use_project_root() -> Path:
    """Give a notebook's relative paths the meaning they have under `mmr1kit run`; returns the working directory.

    `mmr1kit run` starts the kernel in the project that holds the notebook (the nearest parent with `pyproject.toml`
    or `.git`), so `dataset: data_cards/...` and `run_dir: runs/...` are relative to the project root. JupyterLab
    starts it in the notebook's own folder (`notebooks/`), where the same parameters would point nowhere (or write
    `notebooks/runs/`). Called at the top of every notebook: inside a project but not at its root, it changes to the
    root and says so; under `mmr1kit run` (which already chose the directory, maybe with `--cwd`) it does nothing.
    """
    from mmr1kit.progress import headless

    cwd = Path.cwd()
    root = _repo_root(cwd / "notebook")
    if not headless() and root != cwd.resolve() and (root / "pyproject.toml").is_file():
        os.chdir(root)
        print(f"working directory: {root} (the project root, as under `mmr1kit run`)")
    return Path.cwd()


@contextlib.contextmanager
def _headless_kernel():
    """Kernels started inside inherit `mmr1kit.progress.HEADLESS_KERNEL_ENV`; this process's environment is restored
    after."""
    from mmr1kit.progress import HEADLESS_KERNEL_ENV

    previous = {name: os.environ.get(name) for name in HEADLESS_KERNEL_ENV}
    os.environ.update(HEADLESS_KERNEL_ENV)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _repo_root(notebook: Path) -> Path:
    for parent in notebook.resolve().parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
            return parent
    return Path.cwd()


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# ----------------------------------------------------------------------------------------------------------------
# Sweeps live in `mmr1kit.sweep`; these names stay importable from here.
