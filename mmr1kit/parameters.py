"""Notebook parameters: what a notebook declares, and the checked, coerced values a run injects into it.

papermill injects parameters after the cell tagged `parameters` and only *warns* about a name the notebook does not
declare, so a typo silently runs the defaults. This module is the strict layer in front of it:

1. `notebook_parameters` reads the declared parameters (name, type, default, help) of the one `parameters`-tagged
   cell, which must be the first code cell.
2. `check_parameters` rejects unknown names and coerces command-line strings to the type of each default.
3. `resolve_parameters` merges a YAML preset (`load_preset`) with explicit values, then checks them; preset keys that
   are not parameters pass through the notebook's `config_overrides` dict.

`mmr1kit.notebook.run_notebook` and `mmr1kit.sweep.sweep` call these before anything runs.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
import yaml

_SCALARS = {"int", "float", "bool", "str"}
_TYPE_ALIASES = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Sequence": "list", "Mapping": "dict"}
_KNOWN_TYPES = _SCALARS | {"list", "dict", "tuple"}
_NONE_STRINGS = {"None", "none", "null", "Null", "NULL", "~"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NUMBER = re.compile(r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


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


def _display(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
