"""Learning speed: the demo's held-out greedy accuracy against wall time, for several seeds.

Usage:
    python -m benchmarks.bench_learning                # configs/demo.yaml, seeds 0 1 2, about 6.5 min per seed
    python -m benchmarks.bench_learning --seeds 0      # one seed
    python -m benchmarks.bench_learning --quick        # seconds: small model and data, a few steps (tests)

The pipeline is the demo notebook's (`notebooks/01_train_grpo.ipynb` with `configs/demo.yaml`): load the synthetic
counting set, warm-start the tiny Qwen2.5-VL with `mmr1kit.warmstart.warm_start` on the biased annotator's labels
(`undercount_labels`), then GRPO with `MMR1Trainer` on the true counts, run record on. A `TrainerCallback` evaluates
the held-out split (`eval_size` rows of the test split, greedy, `mmr1kit.evaluate.evaluate`) every
`--eval-every-sft` warm-start steps and every `--eval-every` GRPO steps, and records (wall time, phase, step,
accuracy). Wall time runs from the start of the warm start and excludes the evaluations themselves (their seconds
are recorded separately); the evaluation saves and restores every RNG, so it does not change the training.

Results: `benchmarks/results/learning.json` (every point of every seed; per-seed accuracy after the warm start and
after GRPO, the gain, the phase times; the mean and spread over seeds) and `benchmarks/results/learning.png`.
"""

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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (each a full pipeline)")
    parser.add_argument("--eval-every", type=int, default=25, help="GRPO steps between held-out evaluations")
    parser.add_argument("--eval-every-sft", type=int, default=100, help="warm-start steps between evaluations")
    parser.add_argument("--plot", default=None, help="figure path (default: next to the JSON, .png)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.eval_every, args.eval_every_sft = [0], 2, 2
    return args


def preset(quick: bool) -> dict:
    """The demo's parameters (configs/demo.yaml); `--quick` shrinks the model, data and steps to seconds."""
    params = common.demo_preset()
    if quick:
        params.update(dataset=str(common.counting_data(64, 16)), train_sample_size=64, eval_size=16, warmstart_steps=4, warmstart_batch_size=8, max_steps=4,
                      per_device_train_batch_size=8, num_generations=4, max_completion_length=8)
    return params


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

        from mmr1kit.evaluate import evaluate

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
        self.points.append({"phase": self.phase, "step": step, "wall_s": self.clock.elapsed(), "accuracy": accuracy,
                            "eval_s": eval_s})
        print(f"[learning] {self.phase} step {step}: accuracy {accuracy:.3f} at {self.clock.elapsed():.1f} s",
              flush=True)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._evaluate(model, processing_class, state.global_step)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._evaluate(model, processing_class, state.global_step)


class Clock:
    """Wall time with pauses (the evaluations)."""

    def __init__(self):
        self.start, self.paused, self._pause_at = time.perf_counter(), 0.0, None

    def pause(self):
        self._pause_at = time.perf_counter()

    def resume(self):
        self.paused += time.perf_counter() - self._pause_at
        self._pause_at = None

    def elapsed(self) -> float:
        now = self._pause_at if self._pause_at is not None else time.perf_counter()
        return now - self.start - self.paused


def run_seed(seed: int, params: dict, args, workdir: Path) -> dict:
    """The demo pipeline for one seed; returns its points and phase times."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import undercount_labels
    from mmr1kit.trainer import MMR1Trainer, resolve_model
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
    points, clock = [], Clock()
    evaluate = {"dataset": test, "task": params["task"], "clock": clock, "points": points,
                    "max_new_tokens": config.max_completion_length}
    warm_dir = warm_start(base_model, train, run_dir / "warmstart", labels=labels,
                          max_steps=params["warmstart_steps"], batch_size=params["warmstart_batch_size"],
                          learning_rate=params["warmstart_lr"], seed=seed, min_pixels=config.min_pixels,
                          max_pixels=config.max_pixels,
                          callbacks=[HeldOutEval(phase="warmstart", every=args.eval_every_sft, **evaluate)])
    warmstart_s = clock.elapsed()
    trainer = MMR1Trainer(model=str(warm_dir), args=config, train_dataset=train,
                          callbacks=[HeldOutEval(phase="grpo", every=args.eval_every, **evaluate)])
    common.silence(trainer)
    grpo_start = clock.elapsed()
    trainer.train()
    grpo_s = clock.elapsed() - grpo_start
    grpo = [p for p in points if p["phase"] == "grpo"]
    return {
        "seed": seed,
        "points": points,
        "setup_s": setup_s,
        "warmstart_s": warmstart_s,
        "grpo_s": grpo_s,
        "eval_s": sum(p["eval_s"] for p in points),
        "accuracy_after_warmstart": grpo[0]["accuracy"],
        "accuracy_after_grpo": grpo[-1]["accuracy"],
        "gain": grpo[-1]["accuracy"] - grpo[0]["accuracy"],
        "grpo_steps": trainer.state.global_step,
        "grpo_step_time_s": common.summarize(common.logged(trainer, "step_time")),
        "eval_n": len(test),
    }


def plot(results: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, run in enumerate(results["seeds"]):
        pts = run["points"]
        ax.plot([p["wall_s"] for p in pts], [100 * p["accuracy"] for p in pts], marker="o", ms=3, color=f"C{i}",
                label=f"seed {run['seed']}")
        ax.axvline(run["warmstart_s"], color=f"C{i}", ls=":", lw=1)
    ax.set_xlabel("wall time, s (training only, evaluations excluded)")
    ax.set_ylabel("held-out greedy accuracy, %")
    ax.set_title(title, fontsize=10)
    ax.text(0.01, 0.02, "dotted: end of the warm start (SFT), GRPO after", transform=ax.transAxes, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv=None):
    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    params = preset(args.quick)
    load = common.LoadLog()
    seeds = []
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as workdir:
        for seed in args.seeds:
            run = run_seed(seed, params, args, Path(workdir))
            run["load_1min"] = load.sample()
            seeds.append(run)
            print(f"[learning] seed {seed}: {100 * run['accuracy_after_warmstart']:.1f}% -> "
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
    }
    out = common.out_path(args, NAME)
    figure = Path(args.plot) if args.plot else out.with_suffix(".png")
    title = (f"demo (configs/demo.yaml): held-out accuracy vs wall time, {len(seeds)} seed(s)"
             + (" [quick]" if args.quick else ""))
    plot(results, figure, title)
    results["plot"] = str(figure.relative_to(common.ROOT) if figure.is_relative_to(common.ROOT) else figure)
    config = {"preset": "configs/demo.yaml", "params": params, "seeds": args.seeds, "eval_every": args.eval_every,
              "eval_every_sft": args.eval_every_sft, "threads": args.threads}
    return common.write_result(out, NAME, quick=args.quick, config=config, results=results, load=load.report(),
                               started=started)


if __name__ == "__main__":
    main()
