"""Seconds per GRPO step through each entry point, as a user starts them: is any of them slower than the notebook?

    python -m benchmarks.bench_entry_points            # 2 rounds x 4 variants of 20 steps (about 6 min on 2 cores)
    python -m benchmarks.bench_entry_points --quick    # 3 steps, 1 round (a smoke run, not a measurement)

The same GRPO run (the training notebook's defaults without its warm start, on the default tiny model and the
synthetic counting card) is started four ways, each in a fresh process whose environment has no `OMP_NUM_THREADS`,
as in a user's shell:

- `notebook`: `mmr1kit run notebooks/01_train_grpo.ipynb` (papermill; the notebook sets one torch thread);
- `module`: `python -m mmr1kit.train --field value ...`;
- `api`: the README's Python snippet (`MMR1Config`, `load_dataset`, `MMR1Trainer(...).train()`), run from a
  temporary folder outside the repository;
- `api_every_thread`: the same with `OMP_NUM_THREADS` set to the machine's CPU count, i.e. what `module` and `api`
  did before `mmr1kit.threads` (torch's default keeps every core).

The figure is TRL's logged `step_time` of each step (read from the run's `metrics.jsonl`), less the first two steps
(warm-up); rounds interleave the variants so that a change of load hits all of them. Target: `module` and `api`
within 1.2x of `notebook`.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

NAME = "entry_points"
VARIANTS = ("notebook", "module", "api", "api_every_thread")
TARGET = 1.2
WARMUP = 2
# The GRPO settings of notebooks/01_train_grpo.ipynb's defaults (its parameters cell), no checkpoints.
SETTINGS = {"per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 12, "loss_type": "dapo",
            "beta": 0.04, "learning_rate": 1e-4, "reward_funcs": ["accuracy", "answer_format"],
            "reward_weights": [1.0, 0.1], "train_sample_size": 256, "seed": 0, "save_strategy": "no"}
API = """
import json, sys
from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.trainer import MMR1Trainer

config = MMR1Config(run_dir=sys.argv[1], max_steps=int(sys.argv[2]), **json.loads(sys.argv[3]))
train = load_dataset(config.dataset, "train", config)
MMR1Trainer(args=config, train_dataset=train).train()
"""


def command(variant: str, run_dir: Path, steps: int) -> list[str]:
    settings = {**SETTINGS, "max_steps": steps}
    if variant == "notebook":
        params = [("warmstart_steps", 0), ("eval_size", 1), *[(k, v) for k, v in settings.items()
                                                               if k != "save_strategy"]]
        flat = [x for k, v in params for x in ("-p", k, json.dumps(v) if isinstance(v, list) else str(v))]
        return [sys.executable, "-m", "mmr1kit.cli", "run", str(common.ROOT / "notebooks" / "01_train_grpo.ipynb"),
                "--run-dir", str(run_dir), "-q", *flat]
    if variant == "module":
        flat = []
        for k, v in settings.items():
            flat += [f"--{k}", *(map(str, v) if isinstance(v, list) else [str(v)])]
        return [sys.executable, "-m", "mmr1kit.train", "--run_dir", str(run_dir), *flat]
    others = {k: v for k, v in SETTINGS.items()}
    return [sys.executable, "-c", API, str(run_dir), str(steps), json.dumps(others)]


def environment(variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as in a user's shell
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH")]))
    if variant == "api_every_thread":
        env["OMP_NUM_THREADS"] = str(os.cpu_count())
    return env


def run_once(variant: str, steps: int, workdir: Path) -> dict:
    run_dir = workdir / f"{variant}-{time.time_ns()}"
    cwd = workdir if variant.startswith("api") else common.ROOT  # the README snippet, from outside the repository
    start = time.perf_counter()
    proc = subprocess.run(command(variant, run_dir, steps), cwd=cwd, env=environment(variant), capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    threads = json.loads((run_dir / "manifest.json").read_text())["machine"]["torch_threads"]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"step_time_s": [r["step_time"] for r in rows], "wall_s": round(wall, 2), "torch_threads": threads,
            "omp_num_threads": environment(variant).get("OMP_NUM_THREADS")}


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    started, load = time.time(), common.LoadLog()
    runs = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory(prefix="bench-entry-") as workdir:
        for _ in range(rounds):
            for variant in args.variants:
                runs[variant].append(run_once(variant, steps, Path(workdir)))
                load.sample()
    warmup = min(WARMUP, steps - 1)
    results = {}
    for variant, done in runs.items():
        per_run = [statistics.median(r["step_time_s"][warmup:]) for r in done]
        results[variant] = {"runs": done, "step_time_s": common.summarize(per_run)}
    if "notebook" in results:
        base = results["notebook"]["step_time_s"]["median"]
        for variant, r in results.items():
            r["ratio_to_notebook"] = r["step_time_s"]["median"] / base
            if variant in ("module", "api"):
                r["target_met"] = r["ratio_to_notebook"] <= TARGET
    config = {"settings": SETTINGS, "steps": steps, "rounds": rounds, "warmup_steps_dropped": warmup,
              "model": "tiny (default)", "dataset": "data_cards/synthetic_counting.md",
              "environment": "no OMP_NUM_THREADS (api_every_thread: OMP_NUM_THREADS=cpu_count)"}
    return common.write_result(common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results,
                               load=load.report(), started=started,
                               targets={"module": f"<= {TARGET} x notebook", "api": f"<= {TARGET} x notebook"})


if __name__ == "__main__":
    report = main()
    for variant, r in report["results"].items():
        ratio = f", x{r['ratio_to_notebook']:.2f} of the notebook" if "ratio_to_notebook" in r else ""
        print(f"{variant}: {r['step_time_s']['median']:.3f} s/step{ratio}")
