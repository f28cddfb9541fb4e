"""Step-time overhead of `MMR1Trainer` over `trl.GRPOTrainer` on the same model, data, seed and GRPO settings.

Usage:
    python -m benchmarks.bench_overhead            # demo-sized steps, 14 interleaved rounds, about 2 min
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

Every MMR1Trainer variant runs with `encode_images_once=False`, TRL's image path, so that the ratios are the cost of
MMR1's options alone; what encoding each image once saves is `bench_encode`'s measurement.

Measurement (`--interleave step`, the default): one process builds one trainer per variant, then trains them in
rounds of one optimizer step each (`train()` with `max_steps=1`; the order rotated every round), so that steps of
different variants are seconds apart and the load of a shared machine hits them alike. The first `--warmup` rounds
are dropped; a variant's ratio is computed per round against the TRL step of the same round, and the median over
`--rounds` rounds is reported with its spread. Each `train()` call rebuilds the optimizer, scheduler and dataloader
outside the timed step and starts the schedules afresh, so a temperature schedule stays at its first value: its
cost (setting the temperature everywhere each step) is measured, not its effect on lengths, which a random-init
policy does not have anyway (every completion is full length).
`--interleave run` instead builds a fresh trainer per run of `--steps` steps, `--repeats` repetitions with the
variants' order rotated, and takes the median over each run's steps after `--warmup`.

Figures: TRL's per-step `step_time` (log_history), the wall-clock step (optimizer update and callbacks included) and
the process CPU time of that step (`cpu_ratio`); on a busy machine the CPU-time ratio is the steadier one. The
target is checked on the `step_time` ratio.
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
    parser.add_argument("--interleave", choices=("step", "run"), default="step",
                        help="alternate the variants every step (one trainer each) or every run (fresh trainers)")
    parser.add_argument("--rounds", type=int, default=14, help="step mode: measured rounds of one step per variant")
    parser.add_argument("--steps", type=int, default=10, help="run mode: optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2,
                        help="step mode: rounds dropped first; run mode: first steps of each run dropped")
    parser.add_argument("--repeats", type=int, default=3, help="run mode: interleaved repetitions of every variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (trl is always run)")
    parser.add_argument("--trainer", default="mmr1kit.trainer:MMR1Trainer",
                        help="MODULE:CLASS (or FILE.py:CLASS) of the trainer measured against TRL, e.g. a proposed "
                             "MMR1Trainer subclass")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.repeats = 2, 2, 1, 1
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


def build(variant, model_path, data_path, settings, steps, seed, workdir, trainer_class):
    """A fresh trainer of `variant` for `steps` steps, its `StepClock`, and (for TRL) its config differences."""
    from mmr1kit.config import MMR1Config

    overrides, record = VARIANTS[variant]
    run_dir = tempfile.mkdtemp(prefix=f"{variant}-", dir=workdir)
    # the image caches off (`encode_images_once`): this benchmark measures what MMR1's options cost; bench_encode
    # measures what the caches save
    config = MMR1Config.from_dict({**settings, "encode_images_once": False, **(overrides or NEUTRAL),
                                   "max_steps": steps, "seed": seed, "model_name_or_path": str(model_path),
                                   "run_dir": run_dir})
    return build_trainer(config, data_path, None if variant == "trl" else trainer_class, record)


def build_trainer(config, data_path, trainer_class=None, record=False):
    """`(trainer, StepClock, TRL config differences)` for `config` on `data_path`: plain `trl.GRPOTrainer` on the
    config's TRL fields when `trainer_class` is `None` (differences: `trl_config`'s), else `trainer_class` (None)."""
    from trl import GRPOTrainer

    from mmr1kit.data import load_dataset
    from mmr1kit.models import load_processor
    from mmr1kit.rewards import get_reward_funcs

    model_path = config.model_name_or_path
    dataset = load_dataset(data_path, "train", config)
    clock = common.StepClock()
    reward_funcs = get_reward_funcs(config.reward_funcs)
    differences = None
    if trainer_class is None:
        trl_args, differences = trl_config(config, f"{config.run_dir}/checkpoints")
        processor = load_processor(model_path, config.min_pixels, config.max_pixels)
        trainer = GRPOTrainer(model=str(model_path), reward_funcs=reward_funcs, args=trl_args, train_dataset=dataset,
                              processing_class=processor, callbacks=[clock])
    else:
        trainer = trainer_class(model=str(model_path), reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                                record=record, callbacks=[clock])
    return common.silence(trainer), clock, differences


def train_and_collect(variant, trainer, clock) -> dict:
    """`trainer.train()`; the per-step figures of that call."""
    done = len(clock.durations)
    start = time.perf_counter()
    trainer.train()
    out = {
        "step_time_s": common.logged(trainer, "step_time"),
        "wall_step_s": clock.durations[done:],
        "cpu_step_s": clock.cpu[done:],
        "train_s": time.perf_counter() - start,
        "mean_completion_length": common.logged(trainer, "completions/mean_length"),
    }
    for phase in ("generate", "score", "ref", "policy", "record", "other"):
        if variant != "trl":
            out[f"timing/{phase}"] = common.logged(trainer, f"timing/{phase}")
    return out


def interleave_runs(args, build_one, load):
    """One fresh trainer per run of `--steps` steps; repetition r runs every variant (order rotated by r).

    Returns the runs per variant and, per repetition, each variant's median over its steps after `--warmup`."""
    import statistics

    runs, pairs = {v: [] for v in args.variants}, []
    for r in range(args.repeats):
        order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
        pair = {}
        for variant in order:
            trainer, clock, diff = build_one(variant, args.steps)
            out = train_and_collect(variant, trainer, clock)
            out["repeat"], out["load_1min"], out["trl_config_differences"] = r, load.sample(), diff
            runs[variant].append(out)
            pair[variant] = {k: statistics.median(out[k][args.warmup:])
                             for k in ("step_time_s", "wall_step_s", "cpu_step_s")}
            print(f"[overhead] rep {r} {variant:>20}: median step_time {pair[variant]['step_time_s']:.3f} s, "
                  f"CPU {pair[variant]['cpu_step_s']:.3f} s (load {out['load_1min']})", flush=True)
        pairs.append(pair)
    return runs, pairs


def interleave_steps(args, build_one, load):
    """Every variant's trainer built once; round r trains one step of each (order rotated by r), so consecutive
    steps of different variants are seconds apart and a changing load hits them alike. Each round is a `train()`
    call of one step (the optimizer, scheduler and dataloader are rebuilt between calls, outside the timed step;
    a temperature schedule stays at its first value). The first `--warmup` rounds are dropped."""
    runs, pairs, trainers = {v: [] for v in args.variants}, [], {}
    for variant in args.variants:
        trainers[variant] = build_one(variant, 1)
    for r in range(args.warmup + args.rounds):
        order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
        pair, load_now = {}, load.sample()
        for variant in order:
            trainer, clock, diff = trainers[variant]
            out = train_and_collect(variant, trainer, clock)
            out["round"], out["load_1min"], out["trl_config_differences"] = r, load_now, diff
            runs[variant].append(out)
            pair[variant] = {k: out[k][0] for k in ("step_time_s", "wall_step_s", "cpu_step_s")}
        if r >= args.warmup:
            pairs.append(pair)
        print(f"[overhead] round {r}: " + ", ".join(f"{v} {pair[v]['step_time_s']:.2f}" for v in args.variants)
              + f" s (load {load_now})", flush=True)
    return runs, pairs


def main(argv=None):
    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    model_path, data_path = common.step_inputs(args.quick)
    # The demo's GRPO settings (configs/demo.yaml) on a random-init policy, so every completion is full length.
    settings = {**common.demo_grpo_settings(), **RECORDING, **(QUICK if args.quick else {})}
    trainer_class = common.load_trainer_class(args.trainer)
    load = common.LoadLog()
    workdir = tempfile.mkdtemp(prefix="bench-overhead-")

    def build_one(variant, steps):
        return build(variant, model_path, data_path, settings, steps, args.seed, workdir, trainer_class)

    try:
        interleave = interleave_steps if args.interleave == "step" else interleave_runs
        runs, pairs = interleave(args, build_one, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    differences = next(run["trl_config_differences"] for run in runs["trl"])

    results = {}
    for variant in args.variants:
        results[variant] = {
            "step_time_s": common.summarize([p[variant]["step_time_s"] for p in pairs]),
            "wall_step_s": common.summarize([p[variant]["wall_step_s"] for p in pairs]),
            "cpu_step_s": common.summarize([p[variant]["cpu_step_s"] for p in pairs]),
            "runs": runs[variant],
        }
    for variant in args.variants[1:]:
        r = results[variant]
        for name, key in (("ratio", "step_time_s"), ("wall_ratio", "wall_step_s"), ("cpu_ratio", "cpu_step_s")):
            per_pair = [p[variant][key] / p["trl"][key] for p in pairs]
            r[name] = common.summarize(per_pair)
            r[f"{name}_per_pair"] = per_pair
        target = TARGETS.get(variant)
        r["target"] = target
        r["meets_target"] = None if target is None else r["ratio"]["median"] <= target
        r["meets_target_cpu"] = None if target is None else r["cpu_ratio"]["median"] <= target
        print(f"[overhead] {variant:>20}: ratio {r['ratio']['median']:.3f} [{r['ratio']['min']:.3f}, "
              f"{r['ratio']['max']:.3f}], CPU-time ratio {r['cpu_ratio']['median']:.3f} "
              f"[{r['cpu_ratio']['min']:.3f}, {r['cpu_ratio']['max']:.3f}] (target {target})", flush=True)
    config = {
        "settings": settings,
        "variants": {v: {"mmr1_overrides": VARIANTS[v][0], "record": VARIANTS[v][1]} for v in args.variants},
        "model": str(model_path),
        "data": str(data_path),
        "trainer": args.trainer,
        **{k: getattr(args, k) for k in ("interleave", "rounds", "steps", "warmup", "repeats", "seed", "threads")},
    }
    return common.write_result(
        common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results, load=load.report(),
        started=started, targets=TARGETS, extra={"trl_config_differences": differences},
    )


if __name__ == "__main__":
    main()
