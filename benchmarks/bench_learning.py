"""Learning speed: the demo's held-out greedy accuracy against time, for several seeds.

Usage:
    python -m benchmarks.bench_learning                # configs/demo.yaml, seeds 0 1 2 at once, about 6 min
    python -m benchmarks.bench_learning --seeds 0      # one seed (on a free core: wall time = CPU time)
    python -m benchmarks.bench_learning --set max_steps=50 warmstart_steps=200   # the demo's preset, edited
    python -m benchmarks.bench_learning --quick        # seconds: small model and data, a few steps (tests)

The pipeline is the demo notebook's (`notebooks/01_train_grpo.ipynb` with `configs/demo.yaml`): load the synthetic
counting set, warm-start the tiny Qwen2.5-VL with `mmr1kit.warmstart.warm_start` on the biased annotator's labels
(`undercount_labels`), then GRPO with `MMR1Trainer` on the true counts, run record on. A `TrainerCallback` evaluates
the held-out split (`eval_size` rows of the test split, greedy, `mmr1kit.evaluate.evaluate`) every
`--eval-every-sft` warm-start steps and every `--eval-every` GRPO steps, and records (wall time, CPU time, phase,
step, accuracy, accuracy per true count). Both clocks run from the start of the warm start and exclude the
evaluations themselves (their seconds are recorded separately); the evaluation saves and restores every RNG, so it
does not change the training.

Seeds run in parallel, one process each (`--workers`, default: all of them). Each process uses one torch thread, so
its CPU time is what its wall time would be on a free core; when there are more seeds than cores (3 on the 2-core
machine) the curves are drawn against that CPU time and the wall times, stretched by the sharing, are recorded next
to it. On a machine with a core per seed the curves use the wall time.

Results: `benchmarks/results/learning.json` (every point of every seed; per-seed accuracy after the warm start and
after GRPO, overall and per count, the gain, the phase times; the median and spread over seeds) and
`benchmarks/results/learning.png`.
"""

import os
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_learning.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

NAME = "learning"


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds, each a full pipeline (default 0 1 2; 0 with --quick)")
    parser.add_argument("--eval-every", type=int, default=20, help="GRPO steps between held-out evaluations")
    parser.add_argument("--eval-every-sft", type=int, default=100, help="warm-start steps between evaluations")
    parser.add_argument("--plot", default=None, help="figure path (default: next to the JSON, .png)")
    parser.add_argument("--workers", type=int, default=None,
                        help="seeds trained at once, each in its own process with --threads threads (default: all)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override parameters of configs/demo.yaml (values parsed as YAML)")
    args = parser.parse_args(argv)
    args.overrides = parse_overrides(args.set)
    if args.quick:
        args.eval_every, args.eval_every_sft = 2, 2
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.workers = max(1, min(args.workers or len(args.seeds), len(args.seeds)))
    return args


def parse_overrides(items: list[str]) -> dict:
    """`["max_steps=50", "beta=0"]` -> `{"max_steps": 50, "beta": 0}` (values parsed as YAML)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def preset(quick: bool, overrides: dict | None = None) -> dict:
    """The demo's parameters (configs/demo.yaml); `--quick` shrinks the model, data and steps to seconds; then
    `overrides` (`--set`)."""
    params = common.demo_preset()
    if quick:
        params.update(dataset=str(common.counting_data(64, 16)), train_sample_size=64, eval_size=16,
                      warmstart_steps=4, warmstart_batch_size=8, max_steps=4, per_device_train_batch_size=8,
                      num_generations=4, max_completion_length=8)
    from mmr1kit.config import MMR1Config

    unknown = sorted(set(overrides or {}) - set(params) - set(MMR1Config.field_names()))
    if unknown:  # a typo would otherwise be dropped silently and the benchmark would measure the unedited demo
        raise SystemExit(f"--set: {', '.join(unknown)} is neither a parameter of configs/demo.yaml nor an "
                         f"MMR1Config field")
    return {**params, **(overrides or {})}


class HeldOutEval(common.TrainerCallback):
    """Evaluates the held-out split at the first step and every `every` steps (and the last), for a warm start
    (`SFTTrainer`) or GRPO (`MMR1Trainer`) alike.

    Each point is `{"phase", "step", "wall_s", "accuracy", "eval_s"}`; `wall_s` is the pipeline's training time
    (`clock`), evaluation excluded. Every RNG state is saved and restored around the evaluation.
    """

    def __init__(self, dataset, task, phase, every, clock, points, max_new_tokens):
        self.dataset, self.task, self.phase, self.every = dataset, task, phase, every
        self.clock, self.points, self.max_new_tokens = clock, points, max_new_tokens

    def _evaluate(self, model, processor, step):
        import numpy as np
        import torch

        from mmr1kit.evaluate import accuracy_by, evaluate

        self.clock.pause()
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        was_training = model.training
        start = time.perf_counter()
        result = evaluate(model, self.dataset, self.task, processor=processor, max_new_tokens=self.max_new_tokens)
        eval_s = time.perf_counter() - start
        model.train(was_training)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        self.clock.resume()
        accuracy = result.metrics["accuracy"]
        by_count = None
        if "count" in result.records.columns:  # the counting task: accuracy per true count, as the demo reports it
            table = accuracy_by(result.records, "count")
            by_count = {str(c): float(a) for c, a in zip(table["count"], table["accuracy"], strict=True)}
        self.points.append({"phase": self.phase, "step": step, "wall_s": self.clock.elapsed(),
                            "cpu_s": self.clock.cpu.elapsed(), "accuracy": accuracy, "accuracy_by_count": by_count,
                            "eval_s": eval_s})
        print(f"[learning] {self.phase} step {step}: accuracy {accuracy:.3f} at {self.clock.elapsed():.1f} s",
              flush=True)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._evaluate(model, processing_class, state.global_step)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._evaluate(model, processing_class, state.global_step)


class Clock:
    """Wall time and process CPU time, with pauses (the evaluations).

    With one torch thread the CPU time is the pipeline's own work: it equals the wall time on a free core and, unlike
    the wall time, barely moves when another seed or process shares the machine.
    """

    def __init__(self, timer=time.perf_counter):
        self.timer = timer
        self.start, self.paused, self._pause_at = timer(), 0.0, None

    def pause(self):
        self._pause_at = self.timer()

    def resume(self):
        self.paused += self.timer() - self._pause_at
        self._pause_at = None

    def elapsed(self) -> float:
        now = self._pause_at if self._pause_at is not None else self.timer()
        return now - self.start - self.paused


class Clocks:
    """A wall `Clock` and a CPU `Clock` paused and resumed together."""

    def __init__(self):
        self.wall, self.cpu = Clock(time.perf_counter), Clock(time.process_time)

    def pause(self):
        self.wall.pause()
        self.cpu.pause()

    def resume(self):
        self.wall.resume()
        self.cpu.resume()

    def elapsed(self) -> float:
        return self.wall.elapsed()


def run_seed(seed: int, params: dict, args, workdir: Path) -> dict:
    """The demo pipeline for one seed; returns its points and phase times."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import undercount_labels
    from mmr1kit.models import resolve_model
    from mmr1kit.trainer import MMR1Trainer
    from mmr1kit.warmstart import warm_start

    fields = MMR1Config.field_names()
    run_dir = workdir / f"seed{seed}"
    config = MMR1Config.from_dict({**{k: v for k, v in params.items() if k in fields}, "seed": seed,
                                   "run_dir": str(run_dir), "save_strategy": "no",
                                   **({"model_name_or_path": str(common.tiny_model(True))} if args.quick else {})})
    # ^ checkpoints off: the demo saves every 50 steps, which would put disk writes inside the measured wall time
    t0 = time.perf_counter()
    train = load_dataset(config.dataset, "train", config)
    test = load_dataset(config.dataset, config.eval_split, config)
    test = test.select(range(min(params["eval_size"], len(test))))
    base_model = resolve_model(config.model_name_or_path)
    setup_s = time.perf_counter() - t0
    labels = None
    if params["warmstart_bias"] > 0:
        labels = undercount_labels(train.remove_columns("image"), threshold=params["warmstart_bias_threshold"],
                                   p=params["warmstart_bias"], seed=seed)
    points, clock = [], Clocks()
    evaluate = {"dataset": test, "task": params["task"], "clock": clock, "points": points,
                    "max_new_tokens": config.max_completion_length}
    warm_dir = warm_start(base_model, train, run_dir / "warmstart", labels=labels,
                          max_steps=params["warmstart_steps"], batch_size=params["warmstart_batch_size"],
                          learning_rate=params["warmstart_lr"], seed=seed, min_pixels=config.min_pixels,
                          max_pixels=config.max_pixels,
                          callbacks=[HeldOutEval(phase="warmstart", every=args.eval_every_sft, **evaluate)])
    warmstart_s, warmstart_cpu_s = clock.elapsed(), clock.cpu.elapsed()
    trainer = MMR1Trainer(model=str(warm_dir), args=config, train_dataset=train,
                          callbacks=[HeldOutEval(phase="grpo", every=args.eval_every, **evaluate)])
    common.silence(trainer)
    grpo_start, grpo_cpu_start = clock.elapsed(), clock.cpu.elapsed()
    trainer.train()
    grpo_s, grpo_cpu_s = clock.elapsed() - grpo_start, clock.cpu.elapsed() - grpo_cpu_start
    grpo = [p for p in points if p["phase"] == "grpo"]
    return {
        "seed": seed,
        "points": points,
        "setup_s": setup_s,
        "warmstart_s": warmstart_s,
        "grpo_s": grpo_s,
        "warmstart_cpu_s": warmstart_cpu_s,
        "grpo_cpu_s": grpo_cpu_s,
        "eval_s": sum(p["eval_s"] for p in points),
        "accuracy_after_warmstart": grpo[0]["accuracy"],
        "accuracy_after_grpo": grpo[-1]["accuracy"],
        "accuracy_by_count_after_warmstart": grpo[0]["accuracy_by_count"],
        "accuracy_by_count_after_grpo": grpo[-1]["accuracy_by_count"],
        "gain": grpo[-1]["accuracy"] - grpo[0]["accuracy"],
        "grpo_steps": trainer.state.global_step,
        "grpo_step_time_s": common.summarize(common.logged(trainer, "step_time")),
        "eval_n": len(test),
    }


def time_axis(workers: int, threads: int) -> str:
    """The clock the curves are drawn against: wall time when every seed has cores of its own, else the process
    CPU time (with one thread, what the wall time would be on a free core)."""
    return "wall_s" if workers * threads <= (os.cpu_count() or 1) else "cpu_s"


AXIS_LABELS = {"wall_s": "wall time, s (training only, evaluations excluded)",
               "cpu_s": "training time, s: process CPU time (= wall time on a free core; evaluations excluded)"}


def plot(results: dict, path: Path, title: str, axis: str = "wall_s") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, run in enumerate(results["seeds"]):
        pts = run["points"]
        ax.plot([p[axis] for p in pts], [100 * p["accuracy"] for p in pts], marker="o", ms=3, color=f"C{i}",
                label=f"seed {run['seed']}")
        ax.axvline(run["warmstart_s" if axis == "wall_s" else "warmstart_cpu_s"], color=f"C{i}", ls=":", lw=1)
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("held-out greedy accuracy, %")
    ax.set_title(title, fontsize=10)
    ax.text(0.01, 0.02, "dotted: end of the warm start (SFT), GRPO after", transform=ax.transAxes, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _seed_process(seed: int, params: dict, args, workdir: str) -> dict:
    """One seed in a worker process: its own torch threads, its own load sample."""
    common.setup_torch(args.threads)
    run = run_seed(seed, params, args, Path(workdir))
    run["load_1min"] = common.load_average()[0]
    return run


def run_seeds(params: dict, args, workdir: str, load, seed_process=None) -> list[dict]:
    """Every seed, `args.workers` at a time (fresh spawned processes when more than one), in seed order.

    `seed_process(seed, params, args, workdir)` runs one seed (default: this benchmark's pipeline); it must be a
    module-level function, as spawned processes import it."""
    import concurrent.futures
    import multiprocessing

    workers, seed_process = args.workers, seed_process or _seed_process
    if workers == 1:
        return [seed_process(seed, params, args, workdir) for seed in args.seeds]
    print(f"[learning] seeds {args.seeds}: {workers} at a time, {args.threads} thread(s) each", flush=True)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(seed_process, seed, params, args, workdir) for seed in args.seeds]
        runs = []
        for future in futures:
            runs.append(future.result())
            load.sample()
        return runs


def measure_seeds(args, name: str, seed_process=None) -> tuple[float, dict, "common.LoadLog", list[dict]]:
    """The demo's parameters (with `--set`), then every seed in its own process in a temporary folder, the load
    sampled: `(start time, parameters, load log, one result per seed)`. Shared with `bench_signal`."""
    common.setup_torch(args.threads)
    started = time.time()
    params = preset(args.quick, args.overrides)
    load = common.LoadLog(own_processes=args.workers * args.threads)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        seeds = run_seeds(params, args, workdir, load, seed_process)
    return started, params, load, seeds


def main(argv=None):
    args = parse_args(argv)
    started, params, load, seeds = measure_seeds(args, NAME)
    for run in seeds:
        print(f"[learning] seed {run['seed']}: {100 * run['accuracy_after_warmstart']:.1f}% -> "
              f"{100 * run['accuracy_after_grpo']:.1f}% (warm start {run['warmstart_s']:.0f} s, "
              f"GRPO {run['grpo_s']:.0f} s, load {run['load_1min']})", flush=True)
    results = {
        "seeds": seeds,
        "accuracy_after_warmstart": common.summarize([s["accuracy_after_warmstart"] for s in seeds]),
        "accuracy_after_grpo": common.summarize([s["accuracy_after_grpo"] for s in seeds]),
        "gain": common.summarize([s["gain"] for s in seeds]),
        "warmstart_s": common.summarize([s["warmstart_s"] for s in seeds]),
        "grpo_s": common.summarize([s["grpo_s"] for s in seeds]),
        "pipeline_s": common.summarize([s["warmstart_s"] + s["grpo_s"] for s in seeds]),
        "warmstart_cpu_s": common.summarize([s["warmstart_cpu_s"] for s in seeds]),
        "grpo_cpu_s": common.summarize([s["grpo_cpu_s"] for s in seeds]),
    }
    out = common.out_path(args, NAME)
    figure = Path(args.plot) if args.plot else out.with_suffix(".png")
    axis = time_axis(args.workers, args.threads)
    title = (f"demo (configs/demo.yaml): held-out accuracy vs {'wall' if axis == 'wall_s' else 'training'} time, "
             f"{len(seeds)} seed(s), {args.workers} at a time" + (" [quick]" if args.quick else ""))
    plot(results, figure, title, axis)
    results["time_axis"] = axis
    results["plot"] = str(figure.relative_to(common.ROOT) if figure.is_relative_to(common.ROOT) else figure)
    config = {"preset": "configs/demo.yaml", "overrides": args.overrides, "params": params, "seeds": args.seeds,
              "workers": args.workers, "eval_every": args.eval_every, "eval_every_sft": args.eval_every_sft,
              "threads": args.threads}
    return common.write_result(out, NAME, quick=args.quick, config=config, results=results, load=load.report(),
                               started=started)


if __name__ == "__main__":
    main()
