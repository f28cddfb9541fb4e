"""Calibration of the memory planner: its estimate of the training peak against what a real run allocates, on the CPU.

Usage:
    python -m benchmarks.bench_plan            # tiny, ~50M, ~300M parameters x gradient checkpointing off / on
    python -m benchmarks.bench_plan --quick    # the tiny model only, in this process (tests): not a calibration

Each case is a fresh process that trains a real `MMR1Trainer` for two GRPO steps (so the second step runs with the
optimizer state in place) on a Qwen2.5-VL-architecture model built from a config with random weights: the tiny
model of `mmr1kit.models.tiny_vlm()`, and two wider / deeper ones written from its config (`SIZES`), in fp32 with a
reference model (beta 0.04), 4 completions per step of 224 x 224 images (`min_pixels = max_pixels`, so every image
has the planned number of tokens) and 32 completion tokens.

What is measured, and why it is the GPU figure's counterpart: the peak of the bytes held by tensors. The run is
traced with `torch.profiler` (`profile_memory=True`); every allocation and free of PyTorch's CPU allocator is an
event carrying the allocator's running total of bytes allocated since the trace started. That total plus the bytes
of the tensors alive when the trace starts (both models' parameters and buffers) is the live tensor memory, the
quantity the CUDA caching allocator reports as `torch.cuda.memory_allocated()` (its peak:
`max_memory_allocated`), the figure `memory/peak_*` logs on a GPU. It is not the resident set: the libraries, the
allocator's cached pages and Python objects are not tensors. Per phase, an allocation is attributed to the innermost
`mmr1kit/<phase>` `record_function` range that `mmr1kit.phases` opens around it.

The estimate is `mmr1kit.plan.plan(config, device="cpu", prompt_text_tokens=<measured>)`: the CPU kernels (TRL's fused
head scores every position off CUDA), the measured longest prompt. Target: estimate within 20% of the measured
training peak, in every case.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_plan.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common

NAME = "plan"
TARGET = 0.20  # |estimate / measured - 1|
IMAGE_SIDE = 224
# Model sizes written from the tiny model's config (text_config / vision_config fields); "tiny" is tiny_vlm() itself.
SIZES = {
    "tiny": {},
    "50M": {"text": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
                     "num_key_value_heads": 2, "vocab_size": 32768},
            "vision": {"hidden_size": 256, "intermediate_size": 684, "depth": 4, "num_heads": 4}},
    "300M": {"text": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 16,
                      "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32768},
             "vision": {"hidden_size": 512, "intermediate_size": 1368, "depth": 8, "num_heads": 8}},
}
PHASE_OF = {"generate": "generate", "ref": "reference", "step": "loss", "optimizer": "optimizer"}  # else rollout


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--sizes", default="tiny,50M,300M", help=f"model sizes among {list(SIZES)}")
    parser.add_argument("--replot", action="store_true", help="redraw the figure from the result JSON (--out)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gc", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "tiny"
    args.sizes = args.sizes.split(",")
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; valid: {list(SIZES)}")
    return args


def build_model(size: str) -> Path:
    """The model folder of `size`: `tiny_vlm()`, or its config with `SIZES[size]` written over it, random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mmr1kit.models import cache_dir, tiny_vlm

    tiny = tiny_vlm()
    if not SIZES[size]:
        return tiny
    out = cache_dir() / "models" / f"plan-calibration-{size}"
    if (out / "config.json").exists():
        return out
    config = AutoConfig.from_pretrained(tiny)
    for key, value in SIZES[size]["text"].items():
        setattr(config.text_config, key, value)
    for key, value in SIZES[size]["vision"].items():
        setattr(config.vision_config, key, value)
    text = config.text_config
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    if getattr(text, "head_dim", None):
        text.head_dim = text.hidden_size // text.num_attention_heads
    config.vision_config.out_hidden_size = config.text_config.hidden_size
    config.vision_config.fullatt_block_indexes = [config.vision_config.depth - 1]
    half = config.text_config.hidden_size // config.text_config.num_attention_heads // 2
    config.text_config.rope_parameters["mrope_section"] = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    for f in tiny.iterdir():  # tokenizer, processor, generation config
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, tmp / f.name)
    os.replace(tmp, out)
    return out


def dataset() -> Path:
    from mmr1kit.data.synthetic import write_dataset
    from mmr1kit.models import cache_dir

    root = cache_dir() / "data" / f"plan-counting-{IMAGE_SIDE}"
    if not (root / "train.json").exists():
        write_dataset("counting", root, n=16, seed=0, split="train", image_size=IMAGE_SIDE)
    return root


def settings(model: Path, gc: bool, run_dir: str) -> dict:
    return {"model_name_or_path": str(model), "dataset": str(dataset()), "run_dir": run_dir, "max_steps": 2,
            "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 32, "beta": 0.04,
            "loss_type": "grpo", "learning_rate": 1e-5, "save_strategy": "no", "logging_steps": 1, "seed": 0,
            "min_pixels": IMAGE_SIDE**2, "max_pixels": IMAGE_SIDE**2, "gradient_checkpointing": gc, "bf16": False,
            "reward_funcs": ["accuracy", "format"]}


def longest_prompt_text_tokens(trainer, rows) -> int:
    """Text tokens of the longest prompt after the chat template (the image placeholder excluded)."""
    tok = trainer.processing_class.tokenizer
    template = trainer.processing_class
    lengths = []
    for row in rows:
        text = template.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        lengths.append(len(tok(text)["input_ids"]) - text.count("<|image_pad|>"))
    return max(lengths)


def live_bytes(*modules) -> int:
    """Bytes of the distinct storages of the modules' parameters and buffers."""
    seen = {}
    for module in modules:
        if module is None:
            continue
        for t in list(module.parameters()) + list(module.buffers()):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def phase_peaks(prof, baseline: int) -> dict:
    """Peak live tensor bytes per phase (innermost `mmr1kit/<phase>` range) and overall, from the trace."""
    ranges, allocations = [], []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        kind = type(node.extra_fields).__name__
        if kind.endswith("Allocation"):
            if str(node.extra_fields.device).startswith("cpu"):
                allocations.append((node.start_time_ns, node.extra_fields.total_allocated))
        elif node.name.startswith("mmr1kit/"):
            ranges.append((node.start_time_ns, node.end_time_ns, node.name.removeprefix("mmr1kit/")))
    ranges.sort()
    peaks = {}
    for t, total in allocations:
        inner = [r for r in ranges if r[0] <= t <= r[1]]
        name = PHASE_OF.get(inner[-1][2], "rollout") if inner else "other"
        peaks[name] = max(peaks.get(name, 0), baseline + total)
    peaks["peak"] = max(peaks.values())
    return peaks


def child(args) -> dict:
    """One case in a fresh process: train two steps under the profiler; measure and estimate."""
    from torch.profiler import ProfilerActivity, profile

    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.plan import plan
    from mmr1kit.trainer import MMR1Trainer

    common.setup_torch(args.threads)
    model = build_model(args.child)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as run_dir:
        config = MMR1Config.from_dict(settings(model, bool(args.gc), run_dir))
        data = load_dataset(config.dataset, "train", config)
        trainer = common.silence(MMR1Trainer(args=config, train_dataset=data))
        text_tokens = longest_prompt_text_tokens(trainer, data)
        baseline = live_bytes(trainer.model, trainer.ref_model)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            trainer.train()
        train_s = time.perf_counter() - start
        measured = phase_peaks(prof, baseline)
        lengths = common.logged(trainer, "completions/max_length")
    estimate = plan(config, device="cpu", prompt_text_tokens=text_tokens)
    phases = {**estimate.phases}
    return {
        "size": args.child, "gradient_checkpointing": bool(args.gc), "parameters": estimate.arch.params,
        "prompt_text_tokens": text_tokens, "image_tokens": estimate.arch.image_tokens(config.max_pixels),
        "completion_max_length": lengths, "baseline_bytes": baseline, "measured_bytes": measured,
        "estimate_bytes": {**phases, "peak": estimate.training_peak}, "estimate_parts_bytes": estimate.parts,
        "ratio": estimate.training_peak / measured["peak"], "train_s": train_s,
    }


def run_child(size: str, gc: bool, args) -> dict:
    if args.quick:  # in this process: the trace counts only what the run allocates, the rest is the baseline
        return child(argparse.Namespace(child=size, gc=int(gc), threads=args.threads))
    cmd = [sys.executable, "-m", "benchmarks.bench_plan", "--child", size, "--gc", str(int(gc)), "--threads",
           str(args.threads)]
    proc = subprocess.run(cmd, check=False, cwd=common.ROOT, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"bench_plan child {size} gc={gc} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def figure(cases: list[dict], path: Path) -> None:
    """Estimated against measured peak per phase and overall: a row per checkpointing setting, a column per size.

    The planner's `rollout` phase is the reference / old log-prob pass, which the trace names `reference`; the rest
    of the rollout (templates, images, rewards) has no estimate of its own and is not drawn.
    """
    from matplotlib.figure import Figure

    phases = {"generate": "generate", "reference": "rollout", "loss": "loss", "optimizer": "optimizer",
              "peak": "peak"}
    sizes = list(dict.fromkeys(c["size"] for c in cases))
    fig = Figure(figsize=(4.4 * len(sizes), 7.0), layout="constrained")
    axes = fig.subplots(2, len(sizes), squeeze=False)
    for case in cases:
        ax = axes[int(case["gradient_checkpointing"])][sizes.index(case["size"])]
        names = [p for p in phases if p in case["measured_bytes"]]
        got = [case["measured_bytes"][p] / 2**30 for p in names]
        est = [case["estimate_bytes"][phases[p]] / 2**30 for p in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], got, width=0.4, label="measured (CPU allocator)", color="0.55")
        ax.bar([i + 0.2 for i in x], est, width=0.4, label="estimate (mmr1kit.plan)", color="C0")
        ax.set_xticks(list(x), names, fontsize="small")
        gc = "on" if case["gradient_checkpointing"] else "off"
        ax.set_title(f"{case['size']} ({case['parameters'] / 1e6:.1f}M), checkpointing {gc}\n"
                     f"peak: estimate / measured = {case['ratio']:.2f}", fontsize="medium")
        ax.set_ylabel("GiB")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("mmr1kit.plan: estimated against measured peak memory per phase (two GRPO steps, CPU, fp32)")
    fig.savefig(path, dpi=100)


def markdown_table(report: dict) -> str:
    """The cases of a result as the Markdown table `docs/memory.md` shows."""
    header = ("| model | parameters | gradient checkpointing | measured peak (GiB) | estimate (GiB) | estimate / measured "
              "| peak phase (measured / estimated) |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for c in report["results"]["cases"]:
        measured = {k: v for k, v in c["measured_bytes"].items() if k != "peak"}
        estimate = {k: v for k, v in c["estimate_bytes"].items() if k != "peak"}
        lines.append(f"| {c['size']} | {c['parameters'] / 1e6:.2f}M | {'on' if c['gradient_checkpointing'] else 'off'} "
                     f"| {c['measured_bytes']['peak'] / 2**30:.3f} | {c['estimate_bytes']['peak'] / 2**30:.3f} "
                     f"| {c['ratio']:.3f} | {max(measured, key=measured.get)} / {max(estimate, key=estimate.get)} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return None
    if args.replot:
        out = common.out_path(args, NAME)
        figure(json.loads(out.read_text())["results"]["cases"], out.with_suffix(".png"))
        return None
    started = time.time()
    load = common.LoadLog()
    cases = []
    for size in args.sizes:
        build_model(size)
        for gc in (False, True):
            case = run_child(size, gc, args)
            case["load_1min"] = load.sample()
            case["within_target"] = abs(case["ratio"] - 1) <= TARGET
            cases.append(case)
            print(f"[plan] {size:>5} gc={int(gc)}: measured {case['measured_bytes']['peak'] / 2**30:.3f} GiB, "
                  f"estimate {case['estimate_bytes']['peak'] / 2**30:.3f} GiB (x{case['ratio']:.3f})", flush=True)
    out = common.out_path(args, NAME)
    if not args.quick:
        figure(cases, out.with_suffix(".png"))
    config = {"sizes": {s: SIZES[s] for s in args.sizes}, "settings": settings(Path("MODEL"), False, "RUN"),
              "measure": "peak of live tensor bytes: torch.profiler CPU allocator total + tensors alive at start",
              "threads": args.threads}
    results = {"cases": cases, "all_within_target": all(c["within_target"] for c in cases)}
    return common.write_result(out, NAME, quick=args.quick, config=config, results=results, load=load.report(),
                               started=started, targets={"abs_ratio_minus_1": TARGET})


if __name__ == "__main__":
    main()
