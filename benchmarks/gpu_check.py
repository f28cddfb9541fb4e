"""The first look at a GPU node: a few GRPO steps of a Qwen2.5-VL-3B-shaped model, written to one JSON.

Usage (`make gpu-check` installs mmr1kit from the wheel folder first, see benchmarks/wheelhouse.py):
    python -m benchmarks.gpu_check                          # 3B shape on the GPU: HF generate, and vLLM colocate
                                                            # when vLLM is importable (about 5-8 min on one H100)
    python -m benchmarks.gpu_check --size tiny              # the same code at tiny size, on the CPU (a test runs it)

The model is built from a config, offline: the architecture of Qwen2.5-VL-3B-Instruct (36 layers of 2048, 16 heads
with 2 KV heads, vocabulary 151,936 with tied embeddings; a 32-block vision tower of 1280), random weights in
bfloat16, mmr1kit's tiny tokenizer and the stock Qwen2.5-VL processor (ids beyond the tokenizer's 1k tokens decode
to nothing, and a random policy almost never samples the end token, so every completion runs to full length: the
worst case, and the same work at every step). Images are 448 x 448 synthetic counting images, 256 image tokens each.

Each engine trains in its own process (vLLM's memory and its process group go with it). The JSON holds, per engine:
tokens per second of generation and of the whole step, the step's phase split (the trainer's `timing/*` seconds),
the peak GPU memory of each phase (CUDA allocator, exclusive of nested phases), the rollout consistency figures
(`rollout/logp_diff_*` and TRL's `sampling/*`, vLLM only), and the step's metrics; then the versions, the machine
and the wall time against the 8-minute budget. The first step is a warm-up and is left out of the medians.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/gpu_check.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

BUDGET_S = 480
GIB = 2**30
# Qwen/Qwen2.5-VL-3B-Instruct's config.json (architecture only; token ids come from mmr1kit's tokenizer).
QWEN25_VL_3B = dict(
    text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
              tie_word_embeddings=True),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31]),
)
SIZES = {  # what one optimizer step does at each size
    "3b": dict(prompts=2, generations=8, completion=256, steps=3, image_side=448, dtype="bfloat16",
               gradient_checkpointing=True, vllm_max_model_length=1024),
    "tiny": dict(prompts=2, generations=4, completion=16, steps=2, image_side=112, dtype="float32",
                 gradient_checkpointing=False, vllm_max_model_length=512),
}
PHASES = ("generate", "score", "ref", "policy", "record", "other")
CONSISTENCY = ("rollout/logp_diff_mean", "rollout/logp_diff_max", "sampling/sampling_logp_difference/mean",
               "sampling/sampling_logp_difference/max", "sampling/importance_sampling_ratio/min",
               "sampling/importance_sampling_ratio/mean", "sampling/importance_sampling_ratio/max")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="3b")
    parser.add_argument("--engines", default="auto", help="hf, vllm or hf,vllm (auto: vllm where importable)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per engine (first one: warm-up)")
    parser.add_argument("--out", type=Path, default=common.ROOT / "runs" / "gpu_check" / "gpu_check.json")
    parser.add_argument("--work", type=Path, default=None, help="model, data and run folders (default: beside --out)")
    parser.add_argument("--engine-timeout", type=float, default=600, help="seconds one engine may take")
    parser.add_argument("--child", choices=("hf", "vllm"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the model ------------------------------------------------------------------------------------------------------


def qwen25_vl_3b_config(tiny):
    """Qwen2.5-VL-3B's architecture with the special-token ids of the tiny model's config `tiny` (its tokenizer)."""
    from transformers import Qwen2_5_VLConfig

    ids = {k: getattr(tiny.text_config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return Qwen2_5_VLConfig(
        text_config={**QWEN25_VL_3B["text"], **ids}, vision_config=QWEN25_VL_3B["vision"],
        image_token_id=tiny.image_token_id, video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id, vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=True)


def build_model(folder: Path, size: str, device) -> dict:
    """Write a checkpoint folder: mmr1kit's tiny Qwen2.5-VL (tokenizer, processor, chat template), and for `"3b"` the
    3B architecture with random weights in its place. The processor's pixel bounds are the run's, so vLLM sizes the
    images as the trainer does. Returns what was built."""
    import torch
    from transformers import AutoConfig, AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from mmr1kit.models import build_tiny_vlm

    spec = SIZES[size]
    started = time.time()
    build_tiny_vlm(folder, seed=0)
    processor = AutoProcessor.from_pretrained(folder)
    pixels = spec["image_side"] ** 2
    processor.image_processor.size = type(processor.image_processor.size)(shortest_edge=pixels, longest_edge=pixels)
    processor.save_pretrained(folder)
    if size == "3b":
        config = qwen25_vl_3b_config(AutoConfig.from_pretrained(folder))
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it runs: seconds on a GPU instead of minutes on the CPU
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, spec["dtype"]))
        model.generation_config = GenerationConfig.from_pretrained(folder)  # the tiny model's end tokens
        for stale in folder.glob("model*.safetensors*"):
            stale.unlink()
        model.save_pretrained(folder)
        del model
    config = AutoConfig.from_pretrained(folder)
    return {"size": size, "folder": str(folder), "build_s": round(time.time() - started, 1),
            "hidden_size": config.text_config.hidden_size, "layers": config.text_config.num_hidden_layers,
            "vocab_size": config.text_config.vocab_size, "vision_depth": config.vision_config.depth,
            "image_tokens": (spec["image_side"] // 28) ** 2}


# --- peak memory per phase -------------------------------------------------------------------------------------------


class PhaseMemory:
    """Peak CUDA memory (allocator) per phase, exclusive of the phases nested in it, one dict per optimizer step.

    A phase resets the allocator's peak when it starts and when a nested phase ends, so each figure is the most memory
    in use while that phase's own code ran (everything allocated before it, the weights included, counts).
    Does nothing without CUDA."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stack = []
        self.current = defaultdict(int)
        self.steps = []

    def _peak(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated()

    def _reset(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def phase(self, name: str):
        if not self.enabled:
            yield
            return
        if self.stack:  # the outer phase's own peak so far
            outer = self.stack[-1]
            self.current[outer] = max(self.current[outer], self._peak())
        self._reset()
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()
            self.current[name] = max(self.current[name], self._peak())
            self._reset()

    def end_step(self) -> None:
        self.steps.append({k: round(v / GIB, 3) for k, v in self.current.items()})
        self.current = defaultdict(int)


def measured_trainer_class(memory: PhaseMemory):
    """MMR1Trainer with each phase of the step inside `memory.phase` (names as the trainer's `timing/*`)."""
    from transformers import TrainerCallback

    from mmr1kit.trainer import MMR1Trainer

    class Measured(MMR1Trainer):
        def _generate_single_turn(self, *args, **kwargs):
            with memory.phase("generate"):
                return super()._generate_single_turn(*args, **kwargs)

        def _calculate_rewards(self, *args, **kwargs):
            with memory.phase("score"):
                return super()._calculate_rewards(*args, **kwargs)

        def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
            name = "ref" if model is self.ref_model else "policy" if kwargs.get("compute_entropy") else "other"
            with memory.phase(name):
                return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

        def _generate_and_score_completions(self, inputs):
            with memory.phase("other"):  # tokenising, image processing, old log-probs, the rollout check
                return super()._generate_and_score_completions(inputs)

        def training_step(self, *args, **kwargs):
            with memory.phase("policy"):  # forward + backward of the loss
                return super().training_step(*args, **kwargs)

    class OptimizerPhase(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.phase = memory.phase("optimizer")
            self.phase.__enter__()

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.phase.__exit__(None, None, None)

        def on_step_end(self, args, state, control, **kwargs):
            memory.end_step()

    return Measured, OptimizerPhase()


# --- one engine, in its own process --------------------------------------------------------------------------------


def run_engine(engine: str, size: str, steps: int, work: Path) -> dict:
    import torch

    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset

    spec = SIZES[size]
    cuda = torch.cuda.is_available()
    pixels = spec["image_side"] ** 2
    config = MMR1Config.from_dict(dict(
        run_dir=str(work / f"run-{engine}"), model_name_or_path=str(work / "model"), dataset=str(work / "data"),
        max_steps=steps, per_device_train_batch_size=spec["prompts"] * spec["generations"],
        num_generations=spec["generations"], max_completion_length=spec["completion"], learning_rate=1e-6,
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", seed=0, bf16=cuda and
        spec["dtype"] == "bfloat16", gradient_checkpointing=spec["gradient_checkpointing"], min_pixels=pixels,
        max_pixels=pixels, model_init_kwargs={"dtype": spec["dtype"]}, use_vllm=engine == "vllm",
        vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=spec["vllm_max_model_length"]))
    memory = PhaseMemory(enabled=cuda)
    trainer_class, callback = measured_trainer_class(memory)
    started = time.time()
    trainer = trainer_class(args=config, train_dataset=load_dataset(config.dataset, "train", config),
                            callbacks=[callback])
    common.silence(trainer)
    load_s = time.time() - started
    started = time.time()
    trainer.train()
    train_s = time.time() - started
    history = [h for h in trainer.state.log_history if "loss" in h]
    measured = history[1:] or history  # the first step warms up (kernels, allocator, vLLM's graphs)
    completions = spec["prompts"] * spec["generations"]

    def median(key):
        values = [h[key] for h in measured if h.get(key) is not None]
        return statistics.median(values) if values else None

    phases = {p: median(f"timing/{p}") for p in PHASES}
    phases_s = sum(v for v in phases.values() if v)  # the trainer's training_step: rollout + loss
    step_s = median("step_time")  # TRL's: the whole optimizer step
    tokens = median("completions/mean_length") * completions
    kept = memory.steps[-len(measured):]
    peak = {p: max(s.get(p, 0.0) for s in kept) for p in sorted({p for s in kept for p in s})} if cuda else None
    return {
        "status": "ok",
        "load_s": round(load_s, 1), "train_s": round(train_s, 1), "steps": len(history),
        "measured_steps": len(measured),
        "completions_per_step": completions, "completion_tokens_per_step": tokens,
        "tokens_per_second": {"generate": median("tokens_per_second/generate"),
                              "step": tokens / step_s if step_s else None},
        "step_s": step_s, "phase_s": phases, "phases_sum_s": phases_s,
        "phase_share": {p: (v / phases_s if v is not None and phases_s else None) for p, v in phases.items()},
        "peak_memory_gib": peak,
        "peak_memory_gib_per_step": memory.steps if cuda else None,
        "max_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3) if cuda else None,
        "rollout_consistency": {k: median(k) for k in CONSISTENCY if median(k) is not None},
        "history": history,
    }


def run_child(engine: str, args, work: Path) -> dict:
    """`run_engine` in a fresh interpreter; a crash is recorded with the end of its output, not raised."""
    part = work / f"{engine}.json"
    part.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--child", engine, "--size", args.size,
               "--steps", str(args.steps), "--work", str(work)]
    started = time.time()
    try:
        done = subprocess.run(command, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False, timeout=args.engine_timeout)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stdout or b"")[-4000:]
        return {"status": "timeout", "timeout_s": args.engine_timeout, "output_tail":
                tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    if done.returncode != 0 or not part.exists():
        return {"status": "failed", "returncode": done.returncode, "wall_s": round(time.time() - started, 1),
                "output_tail": done.stdout[-4000:]}
    return {**json.loads(part.read_text()), "wall_s": round(time.time() - started, 1)}


def engines_to_run(choice: str, cuda: bool) -> tuple[list[str], dict]:
    """The engines to run, and why any was left out."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if choice != "auto":
        return choice.split(","), {}
    if has_vllm and cuda:
        return ["hf", "vllm"], {}
    why = "vLLM is not installed" if not has_vllm else "no CUDA device: vLLM colocate on the CPU is make test-vllm's"
    return ["hf"], {"vllm": {"status": "skipped", "reason": why}}


def main(argv=None) -> int:
    args = parse_args(argv)
    args.steps = args.steps or SIZES[args.size]["steps"]
    work = args.work or args.out.parent / f"work-{args.size}"
    if args.child:
        common.setup_torch(threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
        result = run_engine(args.child, args.size, args.steps, work)
        (work / f"{args.child}.json").write_text(json.dumps(result, indent=1, default=common._jsonable))
        return 0
    import torch

    started = time.time()
    cuda = torch.cuda.is_available()
    if args.size == "3b" and not cuda:
        print("error: no CUDA device: the 3B check needs a GPU (`--size tiny` runs the same code on the CPU)",
              file=sys.stderr)
        return 2
    from mmr1kit.data.synthetic import write_dataset

    work.mkdir(parents=True, exist_ok=True)
    spec = SIZES[args.size]
    model = build_model(work / "model", args.size, "cuda" if cuda else "cpu")
    write_dataset("counting", work / "data", n=8 * spec["prompts"] * args.steps, seed=0, split="train",
                  image_size=spec["image_side"])
    torch.cuda.empty_cache() if cuda else None
    engines, results = engines_to_run(args.engines, cuda)
    for engine in engines:
        results[engine] = run_child(engine, args, work)
        print(f"{engine}: {results[engine]['status']} in {results[engine].get('wall_s')} s", flush=True)
    wall = time.time() - started
    report = {"check": "gpu_check", "size": args.size, "created": time.time(), "wall_s": round(wall, 1),
              "budget_s": BUDGET_S, "within_budget": wall <= BUDGET_S, "machine": common.machine(),
              "versions": {**common.versions(), "vllm": _version("vllm"), "deepspeed": _version("deepspeed"),
                           "cuda": torch.version.cuda},
              "git": common.git(), "model": model, "settings": {**spec, "steps": args.steps}, "engines": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=common._jsonable) + "\n")
    print(f"wrote {args.out} ({wall:.0f} s)")
    return 0 if all(r["status"] in ("ok", "skipped") for r in results.values()) else 1


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


if __name__ == "__main__":
    sys.exit(main())
