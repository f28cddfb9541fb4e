"""Where a GRPO step of the demo config spends its time: the trainer's phase timers plus a cProfile of the steps.

Usage:
    python -m benchmarks.profile_step                     # demo config on a 600-step warm start (built once, ~3 min)
    python -m benchmarks.profile_step --warm-steps 0      # on the random-init model (every completion full length)
    python -m benchmarks.profile_step --set exact_kl_every=0 --set beta=0
    py-spy record -o /tmp/grpo.svg -- .venv/bin/python -m benchmarks.profile_step --no-cprofile   # flame graph

It trains `--steps` GRPO steps with the demo's settings (configs/demo.yaml, run record on, as in the demo) and
profiles the steps after `--warmup` with cProfile (or not, with `--no-cprofile`, for an outside sampler such as
py-spy). It prints, and writes to `--out` as JSON: the median of every `timing/*` metric, TRL's `step_time`, the
wall-clock step, and the cProfile functions with the largest cumulative time inside the profiled steps.
See docs/profile.md for what the profile shows.
"""

import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/profile_step.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

NAME = "profile"
PHASES = ("generate", "score", "ref", "policy", "record", "other")
# What docs/profile.md attributes the step to: label -> (file name, function name) in the cProfile statistics; where
# several functions match (an override calling its base), the one with the largest cumulative time is taken.
FUNCTIONS = {
    "model.generate (HF, sampling)": ("utils.py", "generate"),
    "TRL _generate (tokenize + image preprocessing #1 + generate + decode)": ("grpo_trainer.py", "_generate"),
    "TRL _tokenize_prompts (apply_chat_template with images: preprocessing #1)": ("grpo_trainer.py",
                                                                                  "_tokenize_prompts"),
    "processor apply_chat_template (preprocessing #1, for generate)": ("processing_utils.py", "apply_chat_template"),
    "processor __call__ (text + images: #1 inside the chat template, and #2 for the forwards)": (
        "processing_utils.py", "__call__"),
    "image processor (resize, normalise, patchify)": ("image_processing_utils.py", "__call__"),
    "TRL _get_per_token_logps_and_entropies (ref pass + loss policy pass)": ("grpo_trainer.py",
                                                                             "_get_per_token_logps_and_entropies"),
    "TRL _compute_loss (policy forward + loss)": ("grpo_trainer.py", "_compute_loss"),
    "mmr1kit _compute_loss (TRL's + estimators, entropy term, exact KL)": ("trainer.py", "_compute_loss"),
    "mmr1kit _exact_kl (two backbone forwards + exact_from_hidden)": ("trainer.py", "_exact_kl"),
    "mmr1kit kl.exact_from_hidden": ("kl.py", "exact_from_hidden"),
    "backward (autograd)": ("__init__.py", "backward"),
    "mmr1kit record_rounds (rollouts.jsonl, prompts.jsonl)": ("rounds.py", "record_rounds"),
    "runs.append_jsonl (write + fsync)": ("runs.py", "append_jsonl"),
    "TRL _calculate_rewards": ("grpo_trainer.py", "_calculate_rewards"),
    "optimizer step (AdamW)": ("adam.py", "step"),
    "gradient clipping": ("clip_grad.py", "clip_grad_norm_"),
    "NonFiniteGuard.on_pre_optimizer_step": ("guards.py", "on_pre_optimizer_step"),
    "vision tower (Qwen2.5-VL get_image_features)": ("modeling_qwen2_5_vl.py", "get_image_features"),
    "dataloader fetch (PNG decode)": ("dataloader.py", "__next__"),
}


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--steps", type=int, default=12, help="GRPO steps trained")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the profiler starts")
    parser.add_argument("--warm-steps", type=int, default=600, help="demo warm-start SFT steps first (0: none)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an MMR1Config field (YAML value), e.g. exact_kl_every=0")
    parser.add_argument("--trainer", default="mmr1kit.trainer:MMR1Trainer", help="MODULE:CLASS or FILE.py:CLASS")
    parser.add_argument("--no-cprofile", action="store_true", help="no cProfile (for py-spy / timers only)")
    parser.add_argument("--top", type=int, default=40, help="cProfile rows kept")
    parser.add_argument("--pstats", default=None, help="also dump the raw cProfile statistics to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.warm_steps, args.top = 3, 1, 2, 10
    return args


class ProfileSteps(common.TrainerCallback):
    """Turns a `cProfile.Profile` on at the start of step `first` and off at the end of training."""

    def __init__(self, profiler, first):
        self.profiler, self.first = profiler, first

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profiler is not None and state.global_step == self.first:
            self.profiler.enable()

    def on_train_end(self, args, state, control, **kwargs):
        if self.profiler is not None:
            self.profiler.disable()


def warm_checkpoint(steps: int, seed: int, quick: bool) -> Path:
    """The demo's warm start (biased labels), built once into the cache; the random-init model when `steps == 0`."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import undercount_labels
    from mmr1kit.models import cache_dir
    from mmr1kit.warmstart import warm_start

    base = common.tiny_model(quick)
    if steps == 0:
        return base
    out = cache_dir() / "bench" / f"warmstart-{base.name}-{steps}-{seed}{'-quick' if quick else ''}"
    if (out / "config.json").exists():
        return out
    p = common.demo_preset()
    config = MMR1Config.from_dict({**common.demo_grpo_settings(), "run_dir": tempfile.gettempdir()})
    dataset = str(common.counting_data(64)) if quick else p["dataset"]
    train = load_dataset(dataset, "train", config, train_sample_size=64 if quick else p["train_sample_size"])
    labels = undercount_labels(train.remove_columns("image"), threshold=p["warmstart_bias_threshold"],
                               p=p["warmstart_bias"], seed=seed)
    return warm_start(base, train, out, labels=labels, max_steps=steps, batch_size=8 if quick else
                      p["warmstart_batch_size"], learning_rate=p["warmstart_lr"], seed=seed,
                      min_pixels=config.min_pixels, max_pixels=config.max_pixels)


def main(argv=None):
    import yaml

    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    model = warm_checkpoint(args.warm_steps, args.seed, args.quick)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    settings = {**common.demo_grpo_settings(), "logging_steps": 1, "save_strategy": "no", **overrides}
    if args.quick:
        settings.update(per_device_train_batch_size=8, num_generations=4, max_completion_length=4)
    dataset = str(common.counting_data(64)) if args.quick else common.demo_preset()["dataset"]
    load = common.LoadLog()
    profiler = None if args.no_cprofile else cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as run_dir:
        config = MMR1Config.from_dict({**settings, "max_steps": args.steps, "seed": args.seed, "run_dir": run_dir,
                                       "model_name_or_path": str(model), "dataset": dataset})
        train = load_dataset(config.dataset, "train", config)
        clock = common.StepClock()
        trainer = common.load_trainer_class(args.trainer)(model=str(model), args=config, train_dataset=train,
                              callbacks=[clock, ProfileSteps(profiler, args.warmup)])
        common.silence(trainer).train()
    keep = slice(args.warmup, None)
    phases = {p: common.summarize(common.logged(trainer, f"timing/{p}")[keep]) for p in PHASES}
    step = common.summarize(common.logged(trainer, "step_time")[keep])
    wall = common.summarize(clock.durations[keep])
    cpu = common.summarize(clock.cpu[keep])
    lengths = common.logged(trainer, "completions/mean_length")[keep]
    print(f"[profile] step_time median {step['median']:.3f} s, wall step {wall['median']:.3f} s, "
          f"CPU {cpu['median']:.3f} s, mean completion length {statistics.median(lengths):.1f}")
    for p in PHASES:
        print(f"[profile]   timing/{p:<9} {phases[p]['median']:.4f} s ({100 * phases[p]['median'] / step['median']:.1f}%)")
    functions, named = [], {}
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=io.StringIO())
        steps = len(common.logged(trainer, "step_time")) - args.warmup
        rows = []
        for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
            rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime_s": tt,
                         "cumtime_s": ct, "cumtime_per_step_s": ct / max(steps, 1)})
        functions = sorted(rows, key=lambda r: -r["cumtime_s"])[: args.top]
        for r in functions[: args.top]:
            print(f"[profile] {r['cumtime_per_step_s']:8.4f} s/step  {r['calls']:>7}  {r['function']}")
        for label, (file, func) in FUNCTIONS.items():
            hits = [(ct, nc) for (f, _, fn), (cc, nc, tt, ct, callers) in stats.stats.items()
                    if Path(f).name == file and fn == func]
            if hits:
                ct, nc = max(hits)
                named[label] = {"calls_per_step": nc / max(steps, 1), "cumtime_per_step_s": ct / max(steps, 1)}
                print(f"[profile] {named[label]['cumtime_per_step_s']:8.4f} s/step  {label}")
        if args.pstats:
            stats.dump_stats(args.pstats)
    config = {"settings": settings, "model": str(model), "dataset": dataset,
              **{k: getattr(args, k) for k in ("steps", "warmup", "warm_steps", "seed", "threads", "no_cprofile",
                                        "trainer")}}
    results = {"phases": phases, "step_time_s": step, "wall_step_s": wall, "cpu_step_s": cpu, "mean_completion_length": lengths,
               "cprofile_top": functions, "cprofile_named": named}
    return common.write_result(common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results,
                               load=load.report(), started=started)


if __name__ == "__main__":
    main()
