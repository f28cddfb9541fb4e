"""Step time of `MMR1Trainer` with each image preprocessed once per step and encoded once per forward pass
(`encode_images_once`, the default: `mmr1kit.vision_cache`) over plain `trl.GRPOTrainer`, at G = 4, 8 and 16.

Usage:
    python -m benchmarks.bench_encode            # 10 interleaved rounds at each G, about 2 min
    python -m benchmarks.bench_encode --quick    # seconds: the smaller tiny model, 16 completions, 1 round (tests)

The step is the demo's (configs/demo.yaml: 64 completions per step, up to 12 new tokens, `loss_type="dapo"`,
`beta=0.04` so that the reference pass runs) on the random-init tiny Qwen2.5-VL (every completion full length), with
the 64 completions split into 64/G prompts of G completions: 16 x 4, 8 x 8 (the demo) and 4 x 16. MMR1's options
are neutral (`kl_approximator="k3"`, `exact_kl_every=0`, record off: `bench_overhead` measures their cost), so the two
trainers differ only in the image work: TRL preprocesses 2 x 64 images and encodes 64 in each of the three passes
(generation prefill, reference, loss); `MMR1Trainer` preprocesses and encodes each of the 64/G distinct images once.

Measurement as `bench_overhead --interleave step`: at each G both trainers are built once, then trained in rounds of
one optimizer step each (the order alternating), so that their steps are seconds apart and the load of the shared
machine hits them alike; the first `--warmup` rounds are dropped. The ratio is taken per round, on the process CPU
time of the step (the load-robust clock: one torch thread) and on TRL's `step_time` (wall). Target: a CPU-time
ratio of at most 0.8 at G = 8, falling as G grows (the image work TRL repeats grows with G).
"""

import shutil
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_encode.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common
from benchmarks.bench_overhead import RECORDING, build_trainer

NAME = "encode"
COMPLETIONS = 64  # the demo's per_device_train_batch_size
GROUPS = (4, 8, 16)
NEUTRAL = {"kl_approximator": "k3", "use_kl": True, "exact_kl_every": 0}
QUICK = {"max_completion_length": 4, "per_device_train_batch_size": 16}
TARGET_G8 = 0.8


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds of one step per trainer, per G")
    parser.add_argument("--warmup", type=int, default=2, help="rounds dropped first, per G")
    parser.add_argument("--groups", default=",".join(map(str, GROUPS)), help="comma-separated G values")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.groups = 1, 1, "4,8"
    args.groups = [int(g) for g in args.groups.split(",")]
    return args


def build(variant, group, model_path, data_path, settings, seed, workdir):
    """`(trainer, StepClock)` for `variant` ("trl" or "once") at group size `group`."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.trainer import MMR1Trainer

    run_dir = tempfile.mkdtemp(prefix=f"{variant}-{group}-", dir=workdir)
    config = MMR1Config.from_dict({**settings, **NEUTRAL, "num_generations": group, "max_steps": 1, "seed": seed,
                                   "model_name_or_path": str(model_path), "run_dir": run_dir})
    trainer, clock, _ = build_trainer(config, data_path, None if variant == "trl" else MMR1Trainer)
    return trainer, clock


def measure_group(args, group, build_one, load) -> dict:
    """Both trainers at one G, interleaved: per-round figures, the ratios and the `vision/*` counts."""
    trainers = {v: build_one(v, group) for v in ("trl", "once")}
    rounds = []
    for r in range(args.warmup + args.rounds):
        order = ("trl", "once") if r % 2 == 0 else ("once", "trl")
        row = {"round": r, "load_1min": load.sample()}
        for variant in order:
            trainer, clock = trainers[variant]
            done = len(clock.cpu)
            trainer.train()
            row[variant] = {"cpu_step_s": clock.cpu[done], "wall_step_s": clock.durations[done],
                            "step_time_s": common.logged(trainer, "step_time")[-1]}
        rounds.append(row)
        print(f"[encode] G={group} round {r}: CPU trl {row['trl']['cpu_step_s']:.3f} s, once "
              f"{row['once']['cpu_step_s']:.3f} s (load {row['load_1min']})", flush=True)
    measured = rounds[args.warmup:]
    once = trainers["once"][0]
    counts = {k: common.logged(once, f"vision/{k}")[-1]
              for k in ("preprocessed", "encoded", "encoded_by_trl", "fallback_images", "unshared_rows")}
    completions = trainers["once"][0].args.per_device_train_batch_size
    out = {"rounds": rounds, "vision": counts, "prompts_per_step": completions // group}
    for name, key in (("cpu_ratio", "cpu_step_s"), ("ratio", "step_time_s"), ("wall_ratio", "wall_step_s")):
        out[name] = common.summarize([row["once"][key] / row["trl"][key] for row in measured])
    for variant in ("trl", "once"):
        out[f"{variant}_cpu_step_s"] = common.summarize([row[variant]["cpu_step_s"] for row in measured])
    return out


def main(argv=None):
    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    model_path, data_path = common.step_inputs(args.quick)
    settings = {**common.demo_grpo_settings(), **RECORDING, "per_device_train_batch_size": COMPLETIONS,
                **(QUICK if args.quick else {})}
    load = common.LoadLog()
    workdir = tempfile.mkdtemp(prefix="bench-encode-")

    def build_one(variant, group):
        return build(variant, group, model_path, data_path, settings, args.seed, workdir)

    results = {}
    try:
        for group in args.groups:
            results[str(group)] = measure_group(args, group, build_one, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = [results[str(g)]["cpu_ratio"]["median"] for g in args.groups]
    for g, m in zip(args.groups, medians):
        r = results[str(g)]
        print(f"[encode] G={g:>2}: CPU-time ratio {m:.3f} [{r['cpu_ratio']['min']:.3f}, {r['cpu_ratio']['max']:.3f}], "
              f"step_time ratio {r['ratio']['median']:.3f}; vision {r['vision']}", flush=True)
    results["meets_target"] = ("8" in results and results["8"]["cpu_ratio"]["median"] <= TARGET_G8
                               and all(a >= b for a, b in pairwise(medians)))
    config = {"settings": settings, "neutral": NEUTRAL, "groups": args.groups, "model": str(model_path),
              "data": str(data_path), **{k: getattr(args, k) for k in ("rounds", "warmup", "seed", "threads")}}
    return common.write_result(
        common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results, load=load.report(),
        started=started, targets={"cpu_ratio_g8": TARGET_G8, "falling_with_G": True},
    )


if __name__ == "__main__":
    main()
