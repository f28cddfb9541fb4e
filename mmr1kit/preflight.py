"""Checks of a notebook run before its kernel starts: every error in a few seconds, nothing left behind.

`mmr1kit run`, `mmr1kit sweep` and `mmr1kit.notebook.run_notebook` call `prepare_notebook_run` (a sweep calls
`check_notebook_parameters` on every grid point first). It checks, in this process and before any folder is made:

1. the parameters with rules by name (`task`, `eval_size`, `warmstart_lr`, `dataset`, ...: `PARAMETER_RULES`), in
   whichever notebook declares them;
2. for a notebook that declares `config_overrides` (it builds an `MMR1Config` from its parameters that are
   `MMR1Config` fields plus that dict, as `01_train_grpo.ipynb` does): that config, with `MMR1Config`'s own checks
   and wording;
3. for a notebook that declares `resume_from_checkpoint` (it starts runs): one run per folder
   (`mmr1kit.run_folder.claim_run_dir`), and on `--resume` the parameters of the run's executed notebook, a new value
   that differs from them being refused unless allowed (`--allow-change NAME`).

Errors are one line each, all of them at once, in a `ValueError`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmr1kit.run_folder import ALLOW, claim_run_dir, run_record


def _tasks():
    from mmr1kit.evaluate_metrics import TASKS

    return (*TASKS, "auto")


# parameter name -> (test, what is accepted); applied to any notebook that declares the parameter
PARAMETER_RULES = {
    "task": (lambda v: v in _tasks(), lambda: f"expected one of {', '.join(_tasks())}"),
    "eval_size": (lambda v: v >= 1, "must be >= 1"),
    "warmstart_steps": (lambda v: v >= 0, "must be >= 0 (0: no warm start)"),
    "warmstart_lr": (lambda v: v > 0, "must be > 0"),
    "warmstart_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "warmstart_bias": (lambda v: 0 <= v <= 1, "a probability: must be in [0, 1]"),
    "warmstart_bias_threshold": (lambda v: v >= 0, "must be >= 0"),
    "num_processes": (lambda v: v >= 1, "must be >= 1"),
    "num_samples": (lambda v: v >= 1, "must be >= 1"),
    "batch_size": (lambda v: v >= 1, "must be >= 1"),
    "max_new_tokens": (lambda v: v >= 0, "must be >= 0 (0: the run's max_completion_length)"),
    "checkpoints": (lambda v: v in ("all", "last", "final"), "expected all, last or final"),
}


def check_dataset(value, cwd=None) -> None:
    """Raise `ValueError` when `value` (a data card, file or folder) does not exist relative to `cwd` (default: here),
    nor in the mmr1kit checkout (`mmr1kit.config_checks.project_path`)."""
    from mmr1kit.config_checks import PROJECT_ROOT

    if not value:
        return
    path = Path(value)
    base = Path(cwd) if cwd is not None else Path.cwd()
    if path.is_absolute() and path.exists() or not path.is_absolute() and ((base / path).exists()
                                                                           or (PROJECT_ROOT / path).exists()):
        return
    raise ValueError(f"MMR1Config.dataset={str(value)!r}: no such file, folder or data card (looked in {base})")


def _defaults(declared: Mapping[str, Mapping[str, Any]]) -> dict:
    out = {}
    for name, info in declared.items():
        try:
            out[name] = ast.literal_eval(info.get("default") or "")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return out


def check_notebook_parameters(notebook, params: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]],
                              cwd=None) -> list[str]:
    """Every problem of `params` (declared defaults filled in) for `notebook`, one line each; [] when all is well."""
    from mmr1kit.config import MMR1Config

    values = {**_defaults(declared), **params}
    where = Path(notebook).name
    errors = []
    for name, (test, accepted) in PARAMETER_RULES.items():
        if name in declared and values.get(name) is not None:
            try:
                ok = test(values[name])
            except TypeError:
                ok = False
            if not ok:
                errors.append(f"parameter {name}={values[name]!r} of {where}: "
                              f"{accepted() if callable(accepted) else accepted}")
    if "dataset" in declared:
        try:
            check_dataset(values.get("dataset"), cwd)
        except ValueError as e:
            errors.append(str(e))
    if "config_overrides" in declared:
        fields = MMR1Config.field_names()
        config_values = {k: v for k, v in values.items() if k in fields}
        overrides = values.get("config_overrides") or {}
        if isinstance(overrides, Mapping):
            config_values.update(overrides)
        if config_values.get("dataset") and cwd is not None and not Path(config_values["dataset"]).is_absolute():
            candidate = Path(cwd) / config_values["dataset"]  # as the kernel, started in `cwd`, will read it
            config_values["dataset"] = str(candidate) if candidate.exists() else config_values["dataset"]
        try:
            MMR1Config.from_dict(config_values)
        except ValueError as e:
            errors += [line for line in str(e).splitlines() if line not in errors]
    return errors


def recorded_parameters(executed_notebook) -> dict | None:
    """The parameters papermill injected into an executed notebook (its `metadata.papermill.parameters`)."""
    import nbformat

    path = Path(executed_notebook)
    if not path.is_file():
        return None
    meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
    return dict(meta.get("parameters") or {})


def _resume_parameters(notebook: Path, params: dict, run_dir: Path, allow) -> dict:
    """The parameters of a resumed run: those of its executed notebook, with `params` on top (checked)."""
    recorded = recorded_parameters(run_dir / notebook.name)
    if recorded is None and not run_record(run_dir):
        raise ValueError(f"--resume: {run_dir} holds no run of {notebook.name} to resume; start one there without "
                         f"--resume")
    recorded = {k: v for k, v in (recorded or {}).items() if k not in ("run_dir", "resume_from_checkpoint")}
    lines = []
    for name, value in params.items():
        old = recorded.get(name)
        if name == "config_overrides" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k != "allow_changes"}
            old = {k: v for k, v in (old or {}).items() if k != "allow_changes"}
        if name in recorded and old != value and name not in allow:
            lines.append(f"resume: {name}={value!r} differs from the run's {name}={old!r} "
                         f"({run_dir / notebook.name}); leave it out to continue the run as it was, or allow the "
                         f"change with {ALLOW['cli'].format(names=name)}")
    if lines:
        raise ValueError("\n".join(lines))
    return {**recorded, **params}


def prepare_notebook_run(notebook, params: dict, declared: Mapping[str, Mapping[str, Any]], run_dir, *, cwd=None,
                         resume: bool = False, overwrite: bool = False, allow_changes=()) -> dict:
    """Check a notebook run before its kernel starts; return the parameters to inject.

    Raises `ValueError` (one line per problem) or `mmr1kit.run_folder.RunFolderInUse`; nothing is written unless
    `overwrite` moves an old run aside, which happens after every check passed.
    """
    notebook, run_dir = Path(notebook), Path(run_dir)
    starts_runs = "resume_from_checkpoint" in declared
    params = dict(params)
    if resume:
        params = _resume_parameters(notebook, params, run_dir, allow_changes)
        params["resume_from_checkpoint"] = True
        from mmr1kit.config import MMR1Config

        allowed_fields = [name for name in allow_changes if name in MMR1Config.field_names()]
        if allowed_fields and "config_overrides" in declared:  # the trainer in the kernel checks them again
            overrides = dict(params.get("config_overrides") or {})
            params["config_overrides"] = {**overrides, "allow_changes": allowed_fields}
    errors = check_notebook_parameters(notebook, params, declared, cwd)
    if errors:
        raise ValueError("\n".join(errors))
    if starts_runs:
        claim_run_dir(run_dir, resume=resume, overwrite=overwrite, how="cli")
    return params
