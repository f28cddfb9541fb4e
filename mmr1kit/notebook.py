"""Run and sweep parameterized notebooks through papermill, with strict parameter checks.

papermill executes a notebook headlessly and injects parameters after the cell tagged `parameters`. It only
*warns* about a parameter name the notebook does not declare, so a typo silently runs the defaults. This module
checks names and types first, then runs, and always leaves a readable report:

1. `notebook_parameters` reads the declared parameters (name, type, default, help) of the one `parameters`-tagged
   cell, which must be the first code cell.
2. `check_parameters` rejects unknown names and coerces command-line strings to the type of each default.
3. `run_notebook` merges a YAML preset with the parameters, executes into `<run_dir>/<notebook name>` and renders
   `<run_dir>/<stem>.html`, also when a cell fails (the partial notebook keeps papermill's error markers).
4. `mmr1kit.sweep.sweep` runs the cartesian product of a grid, one run folder per point, and records every point in
   `<sweep_dir>/sweep.json`; a failing point does not stop the others. Its names (`sweep`, `parse_grid`,
   `SweepPoint`, `SweepResult`) are also importable from this module.
"""

from __future__ import annotations

import ast
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
import yaml

logger = logging.getLogger(__name__)

ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill.execute.ERROR_MARKER_TAG
_SCALARS = {"int", "float", "bool", "str"}
_TYPE_ALIASES = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Sequence": "list", "Mapping": "dict"}
_KNOWN_TYPES = _SCALARS | {"list", "dict", "tuple"}
_NONE_STRINGS = {"None", "none", "null", "Null", "NULL", "~"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NUMBER = re.compile(r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------------------
# Parameters: inspection and checking


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Declared parameters of a notebook, from its single `parameters`-tagged cell.

    Args:
        path (`str` or `os.PathLike`): notebook file.

    Returns:
        `dict[str, dict]`: name → `{"default": str, "inferred_type_name": str, "help": str}`, in cell order.
        `default` is the source text of the value (e.g. `"0.001"`, `"'tiny'"`); `inferred_type_name` is the
        annotation (`"None"` when there is none).

    Raises:
        `ValueError`: no cell or several cells are tagged `parameters`, or the tagged cell is not the first code cell.
    """
    import papermill as pm

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code_cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    where = _display(path)
    if not tagged:
        raise ValueError(f"{where} has no cell tagged 'parameters'; tag its first code cell 'parameters'")
    if len(tagged) > 1:
        cells = ", ".join(str(i + 1) for i in tagged)
        raise ValueError(f"{where} has {len(tagged)} cells tagged 'parameters' (code cells {cells}); keep one")
    if tagged[0] != 0:
        raise ValueError(f"{where}: the 'parameters' cell is code cell {tagged[0] + 1}; it must be the first code cell")

    # papermill's line regex skips some valid declarations (`x: str | None = None`, a `=` in the help comment) and
    # logs a warning for each; read those from the syntax tree instead, so they are not reported as "unknown".
    pm_logger = logging.getLogger("papermill")
    level = pm_logger.level
    pm_logger.setLevel(logging.ERROR)
    try:
        inspected = pm.inspect_notebook(str(path))
    finally:
        pm_logger.setLevel(level)
    inspected = {name: {k: info[k] for k in ("default", "inferred_type_name", "help")}
                 for name, info in inspected.items()}
    parsed = _ast_parameters(code_cells[0].source)
    return {**{name: inspected.get(name, info) for name, info in parsed.items()}, **inspected}


def _ast_parameters(source: str) -> dict[str, dict[str, Any]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    lines, out = source.splitlines(), {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation = node.target.id, ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation = node.targets[0].id, "None"
        else:
            continue
        last = lines[node.end_lineno - 1]
        comment = last[node.value.end_col_offset:].partition("#")[2].strip()
        out[name] = {"default": ast.get_source_segment(source, node.value), "inferred_type_name": annotation,
                     "help": comment}
    return out


def _type_spec(info: Mapping[str, Any]) -> tuple[str | None, bool, str | None]:
    """(base type name or None when unknown, accepts None, list item type or None) of a declared parameter."""
    try:
        default = ast.literal_eval(info.get("default") or "")
        has_default = True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        default, has_default = None, False
    nullable, base, item = has_default and default is None, None, None
    annotation = (info.get("inferred_type_name") or "None").replace(" ", "").replace("typing.", "")
    if annotation not in ("None", "NoneType"):
        optional = re.fullmatch(r"Optional\[(.+)\]", annotation)
        parts = (optional.group(1) if optional else annotation).split("|")
        nullable = nullable or bool(optional) or "None" in parts
        parts = [p for p in parts if p != "None"]
        match = re.fullmatch(r"(\w+)(?:\[(\w+)(?:,\.\.\.)?\])?", parts[0]) if len(parts) == 1 else None
        if match:
            base = _TYPE_ALIASES.get(match.group(1), match.group(1))
            item = match.group(2) if base in ("list", "tuple") and match.group(2) in _SCALARS else None
            base = base if base in _KNOWN_TYPES else None
    if base is None and has_default and type(default).__name__ in _KNOWN_TYPES:
        base = type(default).__name__
    return base, nullable, item


def _parse_any(text: str) -> Any:
    """A command-line string without a declared type: YAML, with numbers such as `1e-5` read as floats."""
    if _NUMBER.fullmatch(text.strip()):
        return int(text) if re.fullmatch(r"[+-]?\d[\d_]*", text.strip()) else float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(value: Any, base: str | None, nullable: bool, item: str | None) -> Any:
    """Value converted to the declared type; raises `TypeError` when it cannot be."""
    if value is None or (nullable and base != "str" and isinstance(value, str) and value.strip() in _NONE_STRINGS):
        if nullable or base is None:
            return None
        raise TypeError
    if base is None:
        return _parse_any(value) if isinstance(value, str) else value
    if base == "str":
        if isinstance(value, str):
            return value
        raise TypeError
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError
    if base in ("int", "float"):
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = _parse_any(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        if base == "float":
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise TypeError
        return int(value)
    if isinstance(value, str):  # list / tuple / dict written as YAML (or JSON) on the command line
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TypeError from None
    if base == "dict":
        if isinstance(value, dict):
            return value
        raise TypeError
    if not isinstance(value, (list, tuple)):
        raise TypeError
    items = [_coerce(v, item, False, None) for v in value] if item else list(value)
    return tuple(items) if base == "tuple" else items


def _type_text(base: str | None, nullable: bool, item: str | None) -> str:
    text = f"{base}[{item}]" if item else (base or "any")
    return f"{text} or None" if nullable else text


def parameter_type(info: Mapping[str, Any]) -> str:
    """Readable declared type of one `notebook_parameters` entry, e.g. `"float"`, `"list[int]"`, `"str or None"`."""
    return _type_text(*_type_spec(info))


def check_parameters(path: str | os.PathLike, params: Mapping[str, Any], *,
                     declared: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Check parameter names against a notebook's declarations and coerce values to the declared types.

    Strings (as given on the command line) are converted to the type of the annotation or, without one, of the
    default: `int`, `float`, `bool` (`true/false/yes/no/on/off/1/0`), `list`/`dict`/`tuple` (YAML, e.g.
    `"[1, 2]"`), `str` (taken as is). A parameter whose default is `None` also accepts `"None"`/`"null"`. Typed
    values are checked the same way (an `int` is accepted for a `float`).

    Args:
        path (`str` or `os.PathLike`): the notebook.
        params (`Mapping[str, Any]`): parameter values.
        declared (`Mapping`, *optional*): the result of `notebook_parameters(path)`, if already read.

    Returns:
        `dict[str, Any]`: the coerced values, in the order given.

    Raises:
        `ValueError`: an unknown name (the message lists the valid ones) or a value that cannot be converted (the
            message names the parameter, the value and the expected type).
    """
    declared = notebook_parameters(path) if declared is None else declared
    where = _display(path)
    unknown = [name for name in params if name not in declared]
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {names} for {where}; "
                         f"valid: {', '.join(declared) or '(none)'}")
    out = {}
    for name, value in params.items():
        spec = _type_spec(declared[name])
        try:
            out[name] = _coerce(value, *spec)
        except TypeError:
            raise ValueError(f"parameter {name!r} of {where}: cannot use {value!r} as {_type_text(*spec)} "
                             f"(default {declared[name]['default']})") from None
    return out


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
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb, resources={"metadata": {
        "name": executed_ipynb.stem}})
    tmp = html_path.with_name(html_path.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, html_path)
    return html_path


def load_preset(preset: str | os.PathLike | Mapping[str, Any], search_root: str | os.PathLike | None = None
                ) -> tuple[dict[str, Any], str]:
    """A preset as a dict plus a name for messages: a mapping, a YAML file, or `NAME` for `configs/NAME.yaml`."""
    if isinstance(preset, Mapping):
        return dict(preset), "preset"
    path = Path(preset)
    if not path.is_file():
        root = Path(search_root) if search_root is not None else Path.cwd()
        candidates = [root / "configs" / f"{preset}.yaml", root / "configs" / str(preset)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            configs = _display(root / "configs")
            raise ValueError(f"preset {str(preset)!r} not found (looked for it as a file and in {configs})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        message = f"preset {_display(path)} must be a YAML mapping of parameter names to values"
        raise ValueError(f"{message}, got {type(data).__name__}")  # noqa: TRY004 - a bad file, not a bad argument
    return data, _display(path)


def resolve_parameters(notebook: str | os.PathLike, parameters: Mapping[str, Any] | None = None,
                       preset: str | os.PathLike | Mapping[str, Any] | None = None, *,
                       declared: Mapping[str, Mapping[str, Any]] | None = None,
                       search_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Merge a preset and parameters (parameters win), then check and coerce them.

    Preset keys that are not notebook parameters are gathered into the `config_overrides` dict parameter when the
    notebook declares one (explicit `config_overrides` values are merged over them); otherwise they are an error.
    `run_dir` is kept in the result even if the notebook does not declare it (the runner consumes it).
    """
    declared = notebook_parameters(notebook) if declared is None else declared
    params = dict(parameters or {})
    from_preset: dict[str, Any] = {}
    if preset is not None:
        values, preset_name = load_preset(preset, search_root)
        extras = {k: v for k, v in values.items() if k not in declared and k != "run_dir"}
        if extras and "config_overrides" not in declared:
            raise ValueError(f"preset {preset_name} sets {', '.join(map(repr, extras))}, which "
                             f"{'is not a parameter' if len(extras) == 1 else 'are not parameters'} of "
                             f"{_display(notebook)} (valid: {', '.join(declared)}), and the notebook has no "
                             f"'config_overrides' dict parameter to pass them through")
        from_preset = {k: v for k, v in values.items() if k not in extras}
        if extras:
            from_preset["config_overrides"] = {**extras, **(from_preset.get("config_overrides") or {})}
    run_dir = params.pop("run_dir", None)
    preset_run_dir = from_preset.pop("run_dir", None)
    run_dir = run_dir if run_dir is not None else preset_run_dir
    if "config_overrides" in params and isinstance(from_preset.get("config_overrides"), dict):
        explicit = check_parameters(notebook, {"config_overrides": params["config_overrides"]},
                                    declared=declared)["config_overrides"]
        params["config_overrides"] = {**from_preset["config_overrides"], **(explicit or {})}
    out = check_parameters(notebook, {**from_preset, **params}, declared=declared)
    if run_dir is not None:
        out["run_dir"] = run_dir
    return out


def run_notebook(notebook: str | os.PathLike, *, parameters: Mapping[str, Any] | None = None,
                 preset: str | os.PathLike | Mapping[str, Any] | None = None,
                 run_dir: str | os.PathLike | None = None, kernel_name: str = "python3",
                 cwd: str | os.PathLike | None = None, log_output: bool = True, progress: bool = True,
                 execution_timeout: int | None = None) -> RunResult:
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

    Returns:
        `RunResult`

    Raises:
        `ValueError`: bad notebook parameters cell, unknown parameter names or values of the wrong type (raised
            before anything runs). `NotebookRunError`: a cell failed; the partial notebook and HTML are kept.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    declared = notebook_parameters(notebook)
    cwd = Path(cwd).resolve() if cwd is not None else _repo_root(notebook)
    params = resolve_parameters(notebook, parameters, preset, declared=declared, search_root=cwd)
    given_run_dir = params.pop("run_dir", None)
    run_dir = Path(run_dir if run_dir is not None else given_run_dir or _default_run_dir(notebook)).resolve()
    if "run_dir" in declared:
        params["run_dir"] = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    output = run_dir / notebook.name
    html = run_dir / f"{notebook.stem}.html"

    start, error = time.perf_counter(), None
    engine_kwargs = {"execution_timeout": execution_timeout} if execution_timeout is not None else {}
    try:
        with _headless_kernel():
            pm.execute_notebook(str(notebook), str(output), parameters=params, kernel_name=kernel_name,
                                cwd=str(cwd), log_output=log_output, progress_bar=progress, **engine_kwargs)
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
    raise NotebookRunError(notebook=notebook, run_dir=run_dir, output_notebook=output, html=html_done,
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
    """Kernels started inside inherit `MMR1KIT_HEADLESS=1`: trainers print text progress (`mmr1kit.progress`)."""
    from mmr1kit.progress import HEADLESS_ENV

    previous = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HEADLESS_ENV, None)
        else:
            os.environ[HEADLESS_ENV] = previous


def _repo_root(notebook: Path) -> Path:
    for parent in notebook.resolve().parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
            return parent
    return Path.cwd()


def _display(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# ----------------------------------------------------------------------------------------------------------------
# Sweeps live in `mmr1kit.sweep`; these names stay importable from here.
