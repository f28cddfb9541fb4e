"""Run folders (design decision 5): every run is a folder, written so that a crash never leaves a broken record.

    runs/<name>/
      config.json        the resolved MMR1Config
      manifest.json      package versions, git commit, seed, machine, start time, dataset counts
      metrics.jsonl      one JSON object per logged step, appended (whole lines, flushed) as it happens
      rollouts.jsonl     every completion: step, prompt id, image, completion, per-function rewards, advantage
      prompts.jsonl      the prompt ledger: every visit of every prompt, its pass rate (mmr1kit.ledger)
      checkpoints/       trainer checkpoints (TRL / transformers format, safetensors)
      capsules/          step-<s>/: one step's batch, weights and optimizer state (`capsule_every`, mmr1kit.capsules)
      *.png              figures
      summary.json       final figures of the run
      <notebook>.ipynb / .html   the executed notebook and its report

JSON files are replaced atomically (write a temporary file, then `os.replace`); JSONL files only ever get whole lines
appended, so a reader sees every complete line and at most one torn last line, which `load_run` drops and reports.
"""

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def write_json(path, data) -> Path:
    """Write `data` as JSON atomically: a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=_jsonable))
    os.replace(tmp, path)
    return path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def append_jsonl(path, rows: list[dict]) -> None:
    """Append whole JSON lines and flush them to disk."""
    if not rows:
        return
    text = "".join(json.dumps(r, default=_jsonable, allow_nan=True) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path) -> tuple[list[dict], list[str]]:
    """Read a JSONL file; return (rows, warnings). A torn or corrupt line is skipped and reported, not fatal."""
    rows, warnings = [], []
    path = Path(path)
    if not path.exists():
        return rows, warnings
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            last = i == len(lines) or (i == len(lines) - 1 and not lines[-1])
            what = "half-written last line" if last else "corrupt line"
            warnings.append(f"{path.name}: line {i} skipped ({what})")
    return rows, warnings


def manifest(seed: int | None = None, extra: dict | None = None) -> dict:
    """Versions, git commit, seed and machine of this process, for the run folder."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("mmr1kit", "torch", "torchvision", "transformers", "trl", "accelerate", "datasets", "vllm", "peft"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    root = Path(__file__).resolve().parent.parent
    git = {}
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10).stdout
        git = {"commit": run("rev-parse", "HEAD").strip(), "dirty": bool(run("status", "--porcelain").strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    machine = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "hostname": platform.node(),
    }
    return {"versions": versions, "git": git, "seed": seed, "machine": machine, "started": time.time(), **(extra or {})}


class RunRecorder:
    """Writes one run folder. Only the main process should own one (the trainer gathers rollouts to it)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"
        self.rollouts_path = self.path / "rollouts.jsonl"

    def write_config(self, config) -> Path:
        return write_json(self.path / "config.json", config.to_dict() if hasattr(config, "to_dict") else config)

    def write_manifest(self, seed=None, **extra) -> Path:
        return write_json(self.path / "manifest.json", manifest(seed, extra))

    def update_manifest(self, **extra) -> Path:
        current = json.loads((self.path / "manifest.json").read_text()) if (self.path / "manifest.json").exists() else {}
        return write_json(self.path / "manifest.json", {**current, **extra})

    def log_metrics(self, step: int, metrics: dict) -> None:
        append_jsonl(self.metrics_path, [{"step": step, **metrics}])

    def log_rollouts(self, rows: list[dict]) -> None:
        append_jsonl(self.rollouts_path, rows)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after `step` (rows a dead process wrote after its last checkpoint), atomically."""
        for path in (self.metrics_path, self.rollouts_path, self.path / "prompts.jsonl"):  # prompts: mmr1kit.ledger
            rows, _ = read_jsonl(path)
            kept = [r for r in rows if r.get("step", 0) <= step]
            if len(kept) != len(rows):
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
                os.replace(tmp, path)
        index_path = self.path / "checkpoints.json"
        if index_path.exists():  # checkpoints saved after `step` by the dead process are gone from the index too
            write_json(index_path, [c for c in json.loads(index_path.read_text()) if c["step"] <= step])
        from mmr1kit.capsules import drop_after

        drop_after(self.path, step)  # capsules of steps the resumed run trains again (mmr1kit.capsules)

    def record_checkpoint(self, step: int, path) -> Path:
        """Add a checkpoint to `checkpoints.json`, the index of the run's checkpoints (atomic)."""
        index_path = self.path / "checkpoints.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else []
        index = [c for c in index if c["step"] != step] + [{"step": step, "path": str(path), "time": time.time()}]
        return write_json(index_path, index)

    def write_summary(self, **values) -> Path:
        """Merge `values` into `summary.json` (atomic)."""
        path = self.path / "summary.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        return write_json(path, {**current, **values})


@dataclass
class Run:
    """A run folder read back as data: `.config` / `.summary` / `.manifest` dicts, `.metrics` / `.rollouts` frames."""

    path: Path
    config: dict
    manifest: dict
    summary: dict
    metrics: pd.DataFrame
    rollouts: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    repeated_steps: dict[str, list[int]] = field(default_factory=dict)  # file name -> steps recorded more than once

    @property
    def name(self) -> str:
        return self.path.name


def _read_json(path, warnings):
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        warnings.append(f"{path.name}: unreadable ({e})")
        return {}


def repeated_steps(rows: list[dict], per_step: str = "one") -> list[int]:
    """Steps recorded more than once, in the order they repeat.

    `per_step="one"` (metrics.jsonl): a step's row appears more than once. `"block"` (rollouts.jsonl, many rows a
    step): a step's rows appear again after another step's, i.e. the step was recorded by two runs or two starts.
    """
    seen, repeated, previous = set(), [], object()
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        if (step in seen and (per_step == "one" or step != previous)) and step not in repeated:
            repeated.append(step)
        seen.add(step)
        previous = step
    return repeated


def load_run(path) -> Run:
    """Read a run folder, every row as written.

    Missing files give empty frames / dicts; torn lines are dropped and listed in `.warnings`. Steps recorded more
    than once (two runs appended to one folder, or a resume that did not drop a dead run's tail) are kept, listed in
    `.repeated_steps` and named in `.warnings`, never dropped quietly.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}")
    warnings = []
    metrics, w1 = read_jsonl(path / "metrics.jsonl")
    rollouts, w2 = read_jsonl(path / "rollouts.jsonl")
    warnings += w1 + w2
    repeated = {name: steps for name, steps in (("metrics.jsonl", repeated_steps(metrics, "one")),
                                                ("rollouts.jsonl", repeated_steps(rollouts, "block"))) if steps}
    for name, steps in repeated.items():
        shown = ", ".join(map(str, steps[:10])) + (f" and {len(steps) - 10} more" if len(steps) > 10 else "")
        warnings.append(f"{name}: step(s) {shown} recorded more than once (two runs in one folder?); "
                        f"every row is kept as written")
    return Run(
        path=path,
        config=_read_json(path / "config.json", warnings),
        manifest=_read_json(path / "manifest.json", warnings),
        summary=_read_json(path / "summary.json", warnings),
        metrics=pd.DataFrame(metrics),
        rollouts=pd.DataFrame(rollouts),
        warnings=warnings,
        repeated_steps=repeated,
    )
