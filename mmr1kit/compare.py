"""Compare runs: one table row per run, mean / std / n over seeds per grid point, curves grouped by a parameter.

A comparison starts from a sweep folder (written by `mmr1kit sweep` / `mmr1kit.notebook.sweep`: `sweep.json` plus
one run folder per grid point), from a folder of run folders, or from a list of run folders:

    df = collect_runs("runs/01_train_grpo-sweep-20260101-120000")   # one row per run
    summarize(df)                                # by the swept parameters except seed: mean, std, n per metric
    plots.plot_rewards(curves(df, by=["kl_approximator"]))   # mean curve per value, averaged over seeds

Columns of `collect_runs`:

| column                 | from                                                                                    |
|------------------------|-----------------------------------------------------------------------------------------|
| `run`                  | the sweep point's name, else the run folder's name                                      |
| `path`, `status`       | the run folder; `succeeded` / `failed` from `sweep.json`, else `succeeded` when the run |
|                        | wrote `summary.json`, `incomplete` with metrics only (crashed, running), `missing`      |
| swept parameters       | the sweep's grid names, else the config fields that differ between the runs            |
| `seed`                 | the run's config                                                                        |
| `steps`, `wall_time_s` | logged steps; the sweep point's wall time, else the summary's `wall_time_s` / runtime  |
| summary keys           | every numeric value of `summary.json` (`eval/accuracy_after`, `train/train_runtime`)   |
| `final/<metric>`       | the mean of the last `last_n` finite values of each `metrics.jsonl` column              |

`df.attrs["params"]` and `df.attrs["metrics"]` name the parameter and metric columns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmr1kit.runs import load_run

__all__ = [
    "collect_runs",
    "compare_report",
    "config_diff",
    "curves",
    "differing_keys",
    "format_summary",
    "key_metrics",
    "load_runs",
    "run_labels",
    "summarize",
    "summary_records",
]

# Fields that name where a run lives, not how it was trained: never a difference between runs.
IGNORED_CONFIG_KEYS = frozenset({"run_dir", "output_dir", "logging_dir", "run_name"})
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_compare_runs.ipynb"
_KEY_METRICS = ("final/reward", "final/kl", "final/entropy", "final/completions/mean_length",
                "final/completions/clipped_ratio", "final/step_time", "wall_time_s")
_MISSING = object()


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def config_diff(configs: Mapping[str, Mapping]) -> dict[str, str]:
    """For each run, the config fields whose values differ between the runs, as `"name=value, ..."`.

    Fields are sorted by name; a field one config lacks counts as different (shown as `name=<missing>`). Location
    fields (`run_dir`, `output_dir`, `logging_dir`, `run_name`) are ignored. Identical configs (or a single one)
    give empty strings.

    Example:
    ```python
    >>> config_diff({"a": {"seed": 0, "kl_approximator": "k1", "beta": 0.04},
    ...              "b": {"seed": 1, "kl_approximator": "k3", "beta": 0.04}})
    {'a': 'kl_approximator=k1, seed=0', 'b': 'kl_approximator=k3, seed=1'}
    ```
    """
    keys = differing_keys(configs)
    return {label: ", ".join(f"{k}={_text(cfg[k]) if k in cfg else '<missing>'}" for k in keys)
            for label, cfg in configs.items()}


def differing_keys(configs: Mapping[str, Mapping]) -> list[str]:
    """Sorted names of the config fields whose values differ between `configs` (location fields ignored)."""
    all_keys = sorted({k for cfg in configs.values() for k in cfg} - IGNORED_CONFIG_KEYS)
    return [k for k in all_keys
            if len({json.dumps(cfg.get(k, "<missing>"), sort_keys=True, default=str) for cfg in configs.values()}) > 1]


def run_labels(configs: Mapping[str, Mapping]) -> dict[str, str]:
    """Legend labels: each run's config difference when those are all distinct and non-empty, else
    `"name: difference"` (or the name alone when the runs do not differ)."""
    diffs = config_diff(configs)
    if all(diffs.values()) and len(set(diffs.values())) == len(diffs):
        return diffs
    return {name: f"{name}: {d}" if d else name for name, d in diffs.items()}


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Folder names, prefixed with their parent's name when two runs share a folder name."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def load_runs(paths: Sequence) -> dict:
    """`{name: mmr1kit.runs.Run}` for run folders, named by folder (made unique); raises if one does not exist."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no run folders given")
    return {name: load_run(p) for name, p in zip(_unique_names(paths), paths)}


# ----------------------------------------------------------------------------------------------- one row per run


def _resolve_source(source) -> tuple[list[tuple[str, Path, str, dict, float | None]], list[str] | None, str]:
    """(runs as (name, path, status, swept values, wall time), grid names or None, description)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if (path / "sweep.json").is_file():
            record = json.loads((path / "sweep.json").read_text())
            runs = []
            for p in record.get("points", []):
                run_dir = Path(p["run_dir"])
                run_dir = run_dir if run_dir.is_absolute() else path / run_dir
                runs.append((p["name"], run_dir, p.get("status", "unknown"), dict(p.get("parameters", {})),
                             p.get("wall_time_s")))
            return runs, list(record.get("grid", {})), str(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no sweep or run folder at {path}")
        if _is_run(path):
            return [(path.name, path, "succeeded", {}, None)], None, str(path)
        found = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
        if not found:
            raise FileNotFoundError(f"{path} has no sweep.json and no run folders (folders with config.json or "
                                    f"metrics.jsonl)")
        return [(p.name, p, "succeeded", {}, None) for p in found], None, str(path)
    if isinstance(source, Sequence):
        paths = [Path(p) for p in source]
        if not paths:
            raise ValueError("collect_runs: the list of run folders is empty")
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"collect_runs: no run folder at {', '.join(missing)}")
        names = _unique_names(paths)
        return [(n, p, "succeeded", {}, None) for n, p in zip(names, paths)], None, ", ".join(map(str, paths))
    raise TypeError(f"collect_runs: expected a sweep folder, a run folder or a list of run folders, "
                    f"got {type(source).__name__}")


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "metrics.jsonl").is_file()


def _last_values(metrics: pd.DataFrame, last_n: int) -> dict[str, float]:
    out = {}
    for col in metrics.columns:
        if col == "step":
            continue
        values = pd.to_numeric(metrics[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        values = values[np.isfinite(values)]
        if values.size:
            out[f"final/{col}"] = float(values[-last_n:].mean())
    return out


def collect_runs(source, *, last_n: int = 1) -> pd.DataFrame:
    """One row per run of a sweep folder, a folder of runs, one run folder or a list of run folders.

    Args:
        source (`str`, `os.PathLike` or a sequence of them): a sweep folder (with `sweep.json`), a run folder, a
            folder whose subfolders are runs, or a list of run folders.
        last_n (`int`, defaults to 1): `final/<metric>` is the mean of the last `last_n` logged finite values.

    Returns:
        `pd.DataFrame` with the columns in the module docstring, in sweep (or given) order. A failed or unreadable
        run keeps its row with NaN metrics. `df.attrs`: `params` (swept / differing parameter columns, `seed`
        excluded), `metrics` (numeric summary and `final/*` columns), `source`.

    Raises:
        `FileNotFoundError`: a folder does not exist, or a folder is neither a sweep nor holds runs.
    """
    if last_n < 1:
        raise ValueError(f"last_n must be at least 1, got {last_n}")
    runs, grid, description = _resolve_source(source)
    rows, configs = [], {}
    for name, path, status, swept, wall in runs:
        row = {"run": name, "path": str(path), "status": status, **swept}
        run = load_run(path) if path.is_dir() else None
        if status == "succeeded" and (run is None or not run.summary):  # never finished, or still running
            row["status"] = "incomplete" if run is not None and not run.metrics.empty else "missing"
        if run is not None:
            configs[name] = run.config
            if "seed" in run.config and "seed" not in row:
                row["seed"] = run.config["seed"]
            row["steps"] = len(run.metrics)
            wall = wall if wall is not None else run.summary.get("wall_time_s", run.summary.get("train/train_runtime"))
            row.update({k: float(v) for k, v in run.summary.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in row})
            row.update(_last_values(run.metrics, last_n))
        row["wall_time_s"] = wall if wall is not None else math.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if grid is None:
        params = [k for k in differing_keys({n: c for n, c in configs.items() if c}) if k != "seed"]
        for k in params:
            df[k] = [configs.get(n, {}).get(k) for n in df["run"]]
            df[k] = df[k].map(lambda v: _text(v) if isinstance(v, (list, dict)) else v)
    else:
        params = [k for k in grid if k != "seed"]
    front = ["run", *params, *(["seed"] if "seed" in df.columns else []), "status", "steps", "wall_time_s", "path"]
    front = [c for c in front if c in df.columns]
    metrics = sorted(c for c in df.columns if c not in front and pd.api.types.is_numeric_dtype(df[c]))
    df = df[front + metrics + [c for c in df.columns if c not in front and c not in metrics]]
    metrics = ["wall_time_s", *metrics]
    df.attrs.update(params=params, metrics=metrics, source=description)
    return df


def key_metrics(df: pd.DataFrame) -> list[str]:
    """The metric columns worth a table: `eval/*`, the final total reward and each function's mean, KL, entropy,
    completion length and clipped ratio, step time, wall time (those present, in that order)."""
    present = list(df.attrs.get("metrics", df.columns))
    evals = [c for c in present if c.startswith("eval/")]
    funcs = [c for c in present if c.startswith("final/rewards/") and c.endswith("/mean")]
    head = [c for c in _KEY_METRICS[:1] if c in present]
    return evals + head + funcs + [c for c in _KEY_METRICS[1:] if c in present]


def format_summary(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A [`summarize`] table as text for reports: one column per metric, `"mean ± std (n)"`, plus `runs`."""
    out = pd.DataFrame(index=table.index)
    out["runs"] = [f"{t}" + (f" ({f} failed)" if f else "") for t, f in
                   zip(table[("runs", "total")], table[("runs", "failed")])]
    for metric in dict.fromkeys(m for m, _ in table.columns if m != "runs"):
        mean, std, n = table[(metric, "mean")], table[(metric, "std")], table[(metric, "n")]
        out[metric] = [("-" if k == 0 else f"{m:.{digits}g}" + ("" if math.isnan(s) else f" ± {s:.{digits}g}")
                        + f" ({k})") for m, s, k in zip(mean, std, n)]
    return out


def summarize(df: pd.DataFrame, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric per group of runs (e.g. per grid point, over seeds).

    Args:
        df (`pd.DataFrame`): from [`collect_runs`].
        by (`Sequence[str]`, *optional*): columns to group by; defaults to `df.attrs["params"]` (the swept
            parameters except `seed`). With none, all runs form one group labelled `all`.
        metrics (`Sequence[str]`, *optional*): defaults to `df.attrs["metrics"]`.

    Returns:
        `pd.DataFrame` indexed by the `by` values (groups in order of first appearance), with columns
        `(metric, "mean" | "std" | "n")` plus `("runs", "total")` and `("runs", "failed")` (rows whose status is not
        `succeeded`; their values are left out of the statistics). `n` counts the succeeded runs with a finite
        value; `std` is the sample std (`ddof=1`), NaN for `n < 2`.

    Raises:
        `ValueError`: a `by` or metric column does not exist.
    """
    by = list(df.attrs.get("params", []) if by is None else by)
    metrics = list(df.attrs.get("metrics", []) if metrics is None else metrics)
    missing = [c for c in [*by, *metrics] if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: no column(s) {missing}; columns: {list(df.columns)}")
    data = df.copy()
    if not by:
        data["group"], by = "all", ["group"]
    for col in by:  # unhashable or mixed values group by their text
        data[col] = data[col].map(lambda v: _text(v) if isinstance(v, (list, dict)) else v)
    values = data[metrics].apply(pd.to_numeric, errors="coerce")
    values = values.where(np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)))
    if "status" in data.columns:  # a crashed or unfinished run's last values are not final results
        values.loc[(data["status"] != "succeeded").to_numpy()] = np.nan
    grouped = pd.concat([data[by], values], axis=1).groupby(by, sort=False, dropna=False)
    table = grouped.agg(["mean", "std", "count"]) if metrics else pd.DataFrame(index=grouped.size().index)
    table = table.rename(columns={"count": "n"}, level=1) if metrics else table
    status = data.groupby(by, sort=False, dropna=False)["status"] if "status" in data else None
    runs = pd.DataFrame({("runs", "total"): data.groupby(by, sort=False, dropna=False).size(),
                         ("runs", "failed"): status.agg(lambda s: int((s != "succeeded").sum())) if status is not None
                         else 0})
    out = pd.concat([runs, table], axis=1)
    out.columns = pd.MultiIndex.from_tuples(list(out.columns))
    return out


def summary_records(table: pd.DataFrame) -> list[dict]:
    """A [`summarize`] table as JSON-able records: `{"key": {by: value}, "runs": {...}, metric: {mean, std, n}}`."""
    names = list(table.index.names)
    out = []
    for key, row in table.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        record = {"key": {str(n): _plain(v) for n, v in zip(names, key)}}
        for (metric, stat), value in row.items():
            record.setdefault(metric, {})[stat] = _plain(value)
        out.append(record)
    return out


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def curves(df: pd.DataFrame, by: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Metrics per step, one entry per run or per group of runs, ready for `mmr1kit.plots` (`{label: frame}`).

    Args:
        df (`pd.DataFrame`): from [`collect_runs`]; runs whose status is not `succeeded` are left out.
        by (`Sequence[str]`, *optional*): group the runs by these columns and average each metric over the runs of
            a group at every step (e.g. over seeds); the label is `"name=value, ... (n=k)"`. Without `by`, one entry
            per run, labelled by its `run` name.

    Returns:
        `dict[str, pd.DataFrame]`: label → frame with a `step` column and one column per metric.
    """
    ok = df[df["status"] == "succeeded"] if "status" in df.columns else df
    frames = {row["run"]: load_run(row["path"]).metrics for _, row in ok.iterrows()}
    frames = {name: m for name, m in frames.items() if not m.empty and "step" in m.columns}
    if not by:
        return frames
    out = {}
    for key, group in ok[ok["run"].isin(list(frames))].groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        members = [frames[name].apply(pd.to_numeric, errors="coerce") for name in group["run"]]
        mean = pd.concat(members).groupby("step", as_index=False).mean()
        out[f"{', '.join(f'{k}={_text(v)}' for k, v in zip(by, key))} (n={len(members)})"] = mean
    return out


def compare_report(sweep_dir, *, run_dir=None, parameters: Mapping | None = None, **kwargs):
    """Execute `notebooks/05_compare_runs.ipynb` on a sweep folder into `<sweep_dir>/comparison/` (HTML report).

    Args:
        sweep_dir (`str` or `os.PathLike`): the sweep folder (with `sweep.json`).
        run_dir (`str` or `os.PathLike`, *optional*): defaults to `<sweep_dir>/comparison`.
        parameters (`Mapping`, *optional*): other parameters of the notebook (`by`, `metrics`, `last_n`, ...).
        **kwargs: passed on to `mmr1kit.notebook.run_notebook` (`log_output`, `progress`, `kernel_name`, ...).

    Returns:
        `mmr1kit.notebook.RunResult`; the report is `result.html`, the table `<run_dir>/comparison.csv`.
    """
    from mmr1kit.notebook import run_notebook

    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / "sweep.json").is_file():
        raise FileNotFoundError(f"{sweep_dir} has no sweep.json (not a sweep folder)")
    if not NOTEBOOK.is_file():
        raise FileNotFoundError(f"comparison notebook not found at {NOTEBOOK} (needs a source checkout)")
    kwargs.setdefault("log_output", False)
    kwargs.setdefault("progress", False)
    return run_notebook(NOTEBOOK, parameters={**(parameters or {}), "sweep_dir": str(sweep_dir)},
                        run_dir=run_dir if run_dir is not None else sweep_dir / "comparison", **kwargs)
