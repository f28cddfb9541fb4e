"""What every benchmark records: the machine, the package versions, how loaded the machine was, every repetition.

A result file is one JSON object:

    {"benchmark": name, "quick": bool, "created": unix time, "wall_s": seconds the benchmark took,
     "machine": {...}, "versions": {...}, "git": {...},
     "load": {"before": [1, 5, 15 min], "after": [...], "max_1min": float, "quiet": bool, "threshold": float},
     "config": {exact configuration}, "results": {...}, "targets": {...}}

`load` is the system load average (`os.getloadavg`) at the start and end of the measurement, and the highest 1-minute
figure seen at any repetition. This machine has 2 cores shared with other work: a figure measured with a 1-minute
load above `QUIET_LOAD` is noisy, and the result says so (`quiet: false`) rather than hiding it.
"""

import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

for _var, _value in (("OMP_NUM_THREADS", "1"), ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
    os.environ.setdefault(_var, _value)

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
QUIET_LOAD = 1.5  # 1-minute load average below which a 2-core machine counts as quiet enough to measure


def load_average() -> list[float]:
    """The 1, 5 and 15-minute system load averages."""
    return [round(x, 2) for x in os.getloadavg()]


class LoadLog:
    """Samples the load average before, during (call `sample()` at each repetition) and after a measurement.

    `own_processes`: busy processes the benchmark itself runs at once (e.g. seeds in parallel); each adds about 1 to
    the load, so the threshold for "quiet" rises by one for each beyond the first.
    """

    def __init__(self, own_processes: int = 1):
        self.threshold = QUIET_LOAD + max(0, own_processes - 1)
        self.before = load_average()
        self.samples = [self.before[0]]
        self.started = time.time()

    def sample(self) -> float:
        value = load_average()[0]
        self.samples.append(value)
        return value

    def report(self) -> dict:
        after = load_average()
        self.samples.append(after[0])
        peak = max(self.samples)
        return {"before": self.before, "after": after, "max_1min": peak, "samples_1min": self.samples,
                "threshold": self.threshold, "quiet": peak < self.threshold}


def wait_for_quiet(max_load: float = QUIET_LOAD, timeout_s: float = 0.0, poll_s: float = 15.0) -> dict:
    """Wait (at most `timeout_s`) until the 1-minute load average is below `max_load`; say how it went."""
    start = time.time()
    while load_average()[0] >= max_load and time.time() - start < timeout_s:
        time.sleep(poll_s)
    return {"waited_s": round(time.time() - start, 1), "load": load_average(), "quiet": load_average()[0] < max_load}


def summarize(values) -> dict:
    """Median and spread of repeated measurements (all of them are kept next to this summary)."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    median = statistics.median(values)
    return {
        "n": len(values),
        "median": median,
        "min": min(values),
        "max": max(values),
        "q1": q[0],
        "q3": q[2],
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "rel_spread": (max(values) - min(values)) / median if median else None,  # (max - min) / median
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("mmr1kit", "torch", "torchvision", "transformers", "trl", "accelerate", "datasets", "tokenizers",
                "pillow", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name() if cuda else None,
    }


def git() -> dict:
    import subprocess

    def run(*a):
        return subprocess.run(["git", *a], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": run("rev-parse", "HEAD") or None, "dirty": bool(run("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def setup_torch(threads: int = 1) -> None:
    """One torch thread (faster for the tiny models on a small CPU, and immune to a busy neighbour core); no bars."""
    import torch
    from transformers.utils import logging

    torch.set_num_threads(threads)
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's deprecation notices
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")


def silence(trainer):
    """Drop the progress bar and the printing of every logged step (the figures are in `log_history`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    return trainer


def write_result(path, name: str, *, quick: bool, config: dict, results: dict, load: dict, started: float,
                 targets: dict | None = None, extra: dict | None = None) -> dict:
    """Write one benchmark's result JSON (atomically) and return it."""
    report = {
        "benchmark": name,
        "quick": quick,
        "created": time.time(),
        "wall_s": round(time.time() - started, 2),
        "machine": machine(),
        "versions": versions(),
        "git": git(),
        "load": load,
        "config": config,
        "targets": targets or {},
        "results": results,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return report


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def base_parser(description: str, name: str):
    """The flags every benchmark takes: `--quick`, `--out`, `--threads`, `--seed`."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-sized variant (tests): not a measurement")
    parser.add_argument("--out", default=None, help=f"result JSON (default benchmarks/results/{name}.json, "
                                                     f"or {name}.quick.json with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def out_path(args, name: str) -> Path:
    if args.out:
        return Path(args.out)
    return RESULTS / (f"{name}.quick.json" if args.quick else f"{name}.json")


# configs/demo.yaml keys that describe one run rather than its GRPO settings; benchmarks set these themselves.
RUN_KEYS = ("run_dir", "seed", "max_steps", "model_name_or_path", "dataset", "train_sample_size")


def demo_preset() -> dict:
    """`configs/demo.yaml` as the notebook reads it: its parameters (MMR1Config fields plus the warm-start / eval
    keys) with `config_overrides` merged in, as `MMR1Config.from_dict({**fields, **config_overrides})` does there."""
    import yaml

    preset = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    overrides = preset.pop("config_overrides", None) or {}
    return {**preset, **overrides}


def demo_grpo_settings() -> dict:
    """The demo's GRPO settings: the `MMR1Config` fields of `demo_preset()`, less the per-run ones."""
    from mmr1kit.config import MMR1Config

    fields = MMR1Config.field_names()
    return {k: v for k, v in demo_preset().items() if k in fields and k not in RUN_KEYS}


def tiny_model(quick: bool) -> Path:
    """The demo's tiny Qwen2.5-VL (size S of docs/demo.md), or a smaller one for `--quick`."""
    from mmr1kit.models import tiny_vlm

    return tiny_vlm(hidden_size=64, vision_hidden_size=32) if quick else tiny_vlm()


def step_inputs(quick: bool) -> tuple[Path, Path]:
    """The model and data of the step-time benchmarks (`bench_overhead`, `bench_encode`): the demo's tiny Qwen2.5-VL
    at random init (every completion full length) and 512 counting rows; smaller ones for `--quick`."""
    return tiny_model(quick), counting_data(64) if quick else counting_data(512)


def counting_data(n_train: int, n_test: int = 0, seed: int = 0) -> Path:
    """A synthetic counting set in MMR1 JSON format (`train.json`, `test.json` + PNGs), written once into the cache."""
    from mmr1kit.data.synthetic import write_dataset
    from mmr1kit.models import cache_dir

    root = cache_dir() / "data" / f"bench-counting-{n_train}-{n_test}-{seed}"
    if not (root / "train.json").exists() or (n_test and not (root / "test.json").exists()):
        if n_test:
            write_dataset("counting", root, n=n_test, seed=seed + 1_000_003, split="test")
        write_dataset("counting", root, n=n_train, seed=seed, split="train")
    return root


class StepClock(TrainerCallback):
    """Keeps the wall-clock and the CPU time of every optimizer step (`on_step_begin` → `on_step_end`).

    TRL's `step_time` covers `training_step` only (generation, scoring, forward, backward); `durations` also cover the
    optimizer update, gradient clipping and the other callbacks. `cpu` is the process's CPU time over the same span
    (`time.process_time`): with one torch thread it is the step's work, and unlike wall time it barely moves when
    other processes compete for the cores, so it is the load-robust companion of the wall-clock figures.
    """

    def __init__(self):
        self.durations, self.cpu = [], []
        self._begin = self._cpu_begin = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin, self._cpu_begin = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._begin)
        self.cpu.append(time.process_time() - self._cpu_begin)


def logged(trainer, key: str) -> list[float]:
    """One logged metric per optimizer step, from `trainer.state.log_history` (training rows only)."""
    return [h[key] for h in trainer.state.log_history if key in h and "train_runtime" not in h]


def load_trainer_class(spec: str):
    """The trainer class named by `module:Class` or `path/to/file.py:Class` (e.g. a proposed MMR1Trainer subclass)."""
    import importlib
    import importlib.util

    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(where).stem, where)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(Path(where).resolve().parent))
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)
