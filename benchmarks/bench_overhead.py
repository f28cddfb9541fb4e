"""Step-time overhead of `MMR1Trainer` over `trl.GRPOTrainer` on the same model, data, seed and GRPO settings.

Usage:
    python -m benchmarks.bench_overhead            # demo-sized steps, 3 interleaved repetitions, about 4 min
    python -m benchmarks.bench_overhead --quick    # seconds: the smaller tiny model, 3 steps (tests)

Both trainers train the demo's tiny Qwen2.5-VL (random init) on the synthetic counting set with the demo's GRPO
settings (64 completions per step: 8 prompts x G=8, up to 12 new tokens, `loss_type="dapo"`) and `beta=0.04`, so
both load a reference model and run its forward pass. TRL's `GRPOConfig` is built from the resolved TRL fields of
the `MMR1Config` (every field compared; `trl_config_differences` in the JSON lists any that differ: none should).

Variants (MMR1 options on top of the shared settings):

- `neutral_record_off` / `neutral_record_on` (target a, ratio <= 1.05): `kl_approximator="k3"` with `use_kl=True`
  (TRL's own k3 loss path), `exact_kl_every=0`, no entropy term, constant temperature, random order; with the run
  record (`metrics.jsonl`, every rollout into `rollouts.jsonl`) off and on. MMR1Trainer still logs k1/k2/k3.
- `full_exact0` / `full_exact1` (target b, ratio <= 1.15): k3 in the loss, all sampled estimators logged, entropy
  regularisation (`entropy_weight=-0.01`), a linear temperature schedule 0.7 → 1.2, the full run record; without and
  with the exact full-vocabulary KL logged every step (`exact_kl_every=1`, the MMR1Config default).
- `exact_in_loss` (c, no target): `kl_approximator="exact"`, record off: the cost of the exact KL as the loss term.

Measurement: one process builds a fresh trainer per run and trains `--steps` optimizer steps; runs are interleaved
(repetition r runs every variant, the order rotated by r) so that slow drifts of a shared machine hit all variants
alike. A run's figure is the median of TRL's per-step `step_time` (log_history) after dropping `--warmup` steps. The
ratio of a variant is computed per repetition against the TRL run of the same repetition, then the median over
repetitions is reported with its spread. Next to it: the wall-clock step (optimizer update and callbacks included)
and the process CPU time of that step (`cpu_ratio`): on a busy machine the wall-clock ratios scatter with the other
processes' load while the CPU-time ratio stays close to the work ratio, so read the CPU-time ratio when the recorded
load is high.
"""

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_overhead.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common

NAME = "overhead"
RECORDING = {"save_strategy": "no", "logging_steps": 1}  # no checkpoints inside the timed runs; every step logged
QUICK = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 4}
NEUTRAL = {"kl_approximator": "k3", "use_kl": True, "exact_kl_every": 0}
FULL = {"kl_approximator": "k3", "use_kl": True, "entropy_reg": True, "entropy_weight": -0.01,
        "temperature_func": "linear", "temperature_begin": 0.7, "temperature_end": 1.2}
VARIANTS = {  # name -> (MMR1Config overrides, record)
    "trl": (None, None),
    "neutral_record_off": (NEUTRAL, False),
    "neutral_record_on": (NEUTRAL, True),
    "full_exact0": ({**FULL, "exact_kl_every": 0}, True),
    "full_exact1": ({**FULL, "exact_kl_every": 1}, True),
    "exact_in_loss": ({"kl_approximator": "exact", "use_kl": True, "exact_kl_every": 0}, False),
}
TARGETS = {"neutral_record_off": 1.05, "neutral_record_on": 1.05, "full_exact0": 1.15, "full_exact1": 1.15}


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of its median")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (trl is always run)")
    parser.add_argument("--trainer", default="mmr1kit.trainer:MMR1Trainer",
                        help="MODULE:CLASS (or FILE.py:CLASS) of the trainer measured against TRL, e.g. a proposed "
                             "MMR1Trainer subclass")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.repeats = 2, 1, 1
    args.variants = ["trl"] + [v for v in args.variants.split(",") if v and v != "trl"]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    return args


def trl_config(config, output_dir):
    """A `trl.GRPOConfig` with every TRL field equal to the resolved `MMR1Config`; returns it and any differences."""
    from trl import GRPOConfig

    names = [f.name for f in dataclasses.fields(GRPOConfig) if f.init]
    kwargs = {n: getattr(config, n) for n in names}
    kwargs["generation_batch_size"] = None  # resolved from steps_per_generation again (the two are exclusive)
    kwargs["output_dir"] = str(output_dir)
    trl_args = GRPOConfig(**kwargs)
    skip = {"output_dir", "logging_dir"}
    differences = {n: [repr(getattr(config, n)), repr(getattr(trl_args, n))] for n in names
                   if n not in skip and getattr(config, n) != getattr(trl_args, n)}
    return trl_args, differences


def run_once(variant, model_path, data_path, settings, steps, seed, workdir, trainer_class):
    """Train one fresh trainer for `steps` steps; return its per-step figures."""
    from trl import GRPOTrainer

    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.models import load_processor
    from mmr1kit.rewards import get_reward_funcs

    overrides, record = VARIANTS[variant]
    run_dir = tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir)
    config = MMR1Config.from_dict({**settings, **(overrides or NEUTRAL), "max_steps": steps, "seed": seed,
                                   "model_name_or_path": str(model_path), "run_dir": run_dir})
    dataset = load_dataset(data_path, "train", config)
    clock = common.StepClock()
    reward_funcs = get_reward_funcs(config.reward_funcs)
    differences = None
    if variant == "trl":
        trl_args, differences = trl_config(config, f"{run_dir}/checkpoints")
        processor = load_processor(model_path, config.min_pixels, config.max_pixels)
        trainer = GRPOTrainer(model=str(model_path), reward_funcs=reward_funcs, args=trl_args, train_dataset=dataset,
                              processing_class=processor, callbacks=[clock])
    else:
        trainer = trainer_class(model=str(model_path), reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                              record=record, callbacks=[clock])
    common.silence(trainer)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    out = {
        "step_time_s": common.logged(trainer, "step_time"),
        "wall_step_s": clock.durations,
        "cpu_step_s": clock.cpu,
        "train_s": train_s,
        "mean_completion_length": common.logged(trainer, "completions/mean_length"),
    }
    for phase in ("generate", "score", "ref", "policy", "record", "other"):
        if variant != "trl":
            out[f"timing/{phase}"] = common.logged(trainer, f"timing/{phase}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return out, differences


def main(argv=None):
    import statistics

    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    model_path = common.tiny_model(args.quick)
    data_path = common.counting_data(64) if args.quick else common.counting_data(512)
    # The demo's GRPO settings (configs/demo.yaml) on a random-init policy, so every completion is full length.
    settings = {**common.demo_grpo_settings(), **RECORDING, **(QUICK if args.quick else {})}
    trainer_class = common.load_trainer_class(args.trainer)
    load = common.LoadLog()
    runs = {v: [] for v in args.variants}
    differences = None
    workdir = tempfile.mkdtemp(prefix="bench-overhead-")
    try:
        for r in range(args.repeats):
            order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
            for variant in order:
                out, diff = run_once(variant, model_path, data_path, settings, args.steps, args.seed, workdir,
                                     trainer_class)
                out["repeat"], out["load_1min"] = r, load.sample()
                runs[variant].append(out)
                differences = diff if diff is not None else differences
                kept, cpu = out["step_time_s"][args.warmup:], out["cpu_step_s"][args.warmup:]
                print(f"[overhead] rep {r} {variant:>20}: median step_time {statistics.median(kept):.3f} s, "
                      f"CPU {statistics.median(cpu):.3f} s (load {out['load_1min']})", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    results = {}
    for variant in args.variants:
        per_rep = [statistics.median(run["step_time_s"][args.warmup:]) for run in runs[variant]]
        wall_rep = [statistics.median(run["wall_step_s"][args.warmup:]) for run in runs[variant]]
        cpu_rep = [statistics.median(run["cpu_step_s"][args.warmup:]) for run in runs[variant]]
        all_steps = [t for run in runs[variant] for t in run["step_time_s"][args.warmup:]]
        results[variant] = {
            "step_time_s": common.summarize(all_steps),
            "step_time_per_repeat_s": per_rep,
            "wall_step_per_repeat_s": wall_rep,
            "cpu_step_per_repeat_s": cpu_rep,
            "runs": runs[variant],
        }
    base_rep = results["trl"]["step_time_per_repeat_s"]
    base_wall = results["trl"]["wall_step_per_repeat_s"]
    base_cpu = results["trl"]["cpu_step_per_repeat_s"]
    for variant in args.variants[1:]:
        ratios = [a / b for a, b in zip(results[variant]["step_time_per_repeat_s"], base_rep)]
        wall = [a / b for a, b in zip(results[variant]["wall_step_per_repeat_s"], base_wall)]
        cpu = [a / b for a, b in zip(results[variant]["cpu_step_per_repeat_s"], base_cpu)]
        results[variant]["ratio"] = common.summarize(ratios)
        results[variant]["ratio_per_repeat"] = ratios
        results[variant]["wall_ratio"] = common.summarize(wall)
        results[variant]["cpu_ratio"] = common.summarize(cpu)
        target = TARGETS.get(variant)
        results[variant]["target"] = target
        results[variant]["meets_target"] = None if target is None else results[variant]["ratio"]["median"] <= target
        results[variant]["meets_target_cpu"] = (None if target is None
                                                else results[variant]["cpu_ratio"]["median"] <= target)
        print(f"[overhead] {variant:>20}: ratio {results[variant]['ratio']['median']:.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}], CPU-time ratio {results[variant]['cpu_ratio']['median']:.3f} "
              f"[{min(cpu):.3f}, {max(cpu):.3f}] (target {target})", flush=True)
    config = {
        "settings": settings,
        "variants": {v: {"mmr1_overrides": VARIANTS[v][0], "record": VARIANTS[v][1]} for v in args.variants},
        "model": str(model_path),
        "data": str(data_path),
        "trainer": args.trainer,
        **{k: getattr(args, k) for k in ("steps", "warmup", "repeats", "seed", "threads")},
    }
    return common.write_result(
        common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results, load=load.report(),
        started=started, targets=TARGETS, extra={"trl_config_differences": differences},
    )


if __name__ == "__main__":
    main()
