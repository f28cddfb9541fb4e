"""Will it fit? Per-device GPU memory of a GRPO run, before any model is loaded.

    mmr1kit plan configs/gpu/counting_qwen25vl3b.yaml                 # the GPUs the preset's comment names
    mmr1kit plan configs/gpu/math_qwen25vl3b.yaml --gpus 4 --gpu-mem 80 --zero 2

`plan(config)` reads the model's architecture from its config alone (`mmr1kit.architecture`), estimates the bytes of
each part of a step per device (`mmr1kit.memory_model`: weights, gradients, optimizer state, reference model,
activations with and without gradient checkpointing, TRL's fused LM head, rollout buffers, generation or vLLM's
colocated share) and says whether the run fits, with the largest group size, per-device batch and `max_pixels` that
would. `warn_if_unfit(config)` is what `python -m mmr1kit.train` calls before loading a model. `docs/memory.md`
explains the model, its assumptions and its calibration.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from mmr1kit import memory_model
from mmr1kit.architecture import Architecture, lora_parameters, read_architecture

logger = logging.getLogger("mmr1kit.plan")
ZERO_CONFIGS = (2, 3)  # the stages configs/accelerate/ ships a launch config for (zero2.yaml, zero3.yaml)
GIB = 2**30
CONTEXT_GIB = 1.0  # CUDA context, cuBLAS / NCCL workspaces
SEARCH_LIMIT = 1024  # largest group size / per-device batch searched
SLACK = 0.10  # caching-allocator fragmentation, as a share of the training peak (an assumption: docs/memory.md)
VLLM_FIELDS = ("use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode",
               "vllm_tensor_parallel_size", "vllm_max_model_length", "vllm_importance_sampling_correction")
SETTINGS = ("model_name_or_path", "per_device_train_batch_size", "num_generations", "gradient_accumulation_steps",
            "steps_per_generation", "generation_batch_size", "num_iterations", "max_completion_length", "max_pixels",
            "beta", "kl_approximator", "exact_kl_every", "use_peft", "lora_r", "lora_alpha", "lora_target_modules", "gradient_checkpointing", "bf16",
            "fp16", "model_init_kwargs", *VLLM_FIELDS)
LAYOUT_LINE = re.compile(r"^#\s*GPUs:\s*(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*GiB\b(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Layout:
    """The machines a run is planned for: `gpus` training processes of `gpu_mem_gib` each, `zero` (0: one process
    or DDP; 1-3: DeepSpeed ZeRO stage), `offload` (ZeRO's CPU offload), `device` (`"cuda"`, or `"cpu"` for the CPU's
    kernels), `prompt_text_tokens` (text tokens of the longest prompt, chat template and system prompt included:
    the config does not say, so it is an assumption)."""

    gpus: int = 1
    gpu_mem_gib: float = 80.0
    zero: int = 0
    offload: bool = False
    device: str = "cuda"
    prompt_text_tokens: int = 256

    def describe(self) -> str:
        how = "one process" if self.gpus == 1 and not self.zero else ("DDP" if not self.zero else f"ZeRO-{self.zero}")
        return f"{self.gpus} x {self.gpu_mem_gib:g} GiB, {how}" + (" + CPU offload" if self.offload else "")


@dataclass
class MemoryPlan:
    """The estimate for one device (bytes unless named `_gib`); `table()` renders it."""

    source: str
    arch: Architecture
    layout: Layout
    settings: dict
    workload: memory_model.Workload
    parts: dict[str, int]
    phases: dict[str, int]
    without_checkpointing: dict[str, int]
    vllm: dict = field(default_factory=dict)
    largest: dict = field(default_factory=dict)

    @property
    def training_peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def reserve(self) -> int:
        return int(CONTEXT_GIB * GIB + SLACK * self.training_peak)

    @property
    def total(self) -> int:
        share = self.vllm.get("share", 0)
        if self.vllm.get("sleep"):  # vLLM releases its memory while the policy trains
            return max(self.training_peak, self.phases["generate"] + share) + self.reserve
        return self.training_peak + share + self.reserve

    @property
    def budget(self) -> int:
        return int(self.layout.gpu_mem_gib * GIB)

    @property
    def fits(self) -> bool:
        return self.total <= self.budget and self.vllm.get("fits", True)

    def table(self) -> str:
        """The plan as one table (`mmr1kit.plan_table.format_table`)."""
        from mmr1kit.plan_table import format_table

        return format_table(self)


# --- inputs ---------------------------------------------------------------------------------------------------------

def load_settings(config) -> tuple[dict, str]:
    """The planner's inputs from an `MMR1Config`, a dict of its fields, or a YAML preset path; and a label.

    A preset is read as `MMR1Config` would read it (unknown fields are errors, every rule is checked), except that
    `use_vllm` is planned without asking for vLLM to be installed (the presets of `configs/gpu/` need it).
    """
    from mmr1kit.config import MMR1Config

    if isinstance(config, (str, Path)):
        values = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config}: a preset is a mapping of MMR1Config fields, got {type(values).__name__}")  # noqa: TRY004
        values.pop("base", None)
        label, config = str(config), values
    else:
        label = getattr(config, "run_dir", None) or "config"
    if isinstance(config, dict):
        vllm = {k: config[k] for k in VLLM_FIELDS if k in config}
        parsed = MMR1Config.from_dict({**config, "use_vllm": False, "use_cpu": True})
        settings = {k: getattr(parsed, k) for k in SETTINGS}
        settings.update(vllm)
        # TRL fills these in for the world size of this process; the plan derives them for its own layout
        settings["generation_batch_size"] = config.get("generation_batch_size")
        settings["steps_per_generation"] = config.get("steps_per_generation")
    else:
        settings = {k: getattr(config, k) for k in SETTINGS}
        settings["generation_batch_size"] = None  # a built config's steps_per_generation already says it
    return settings, label


def preset_layout(path) -> Layout | None:
    """The `Layout` a preset's `# GPUs: N x M GiB, ...` comment names (None when it has none).

    The rest of the line names the launch: `ZeRO-1` / `ZeRO-2` / `ZeRO-3` (DeepSpeed, `offload` for CPU offload),
    anything else is one process or DDP.
    """
    match = LAYOUT_LINE.search(Path(path).read_text())
    if match is None:
        return None
    rest = match.group(3)
    zero = re.search(r"ZeRO-?([0-3])", rest, re.IGNORECASE)
    return Layout(gpus=int(match.group(1)), gpu_mem_gib=float(match.group(2)), zero=int(zero.group(1)) if zero else 0,
                  offload="offload" in rest.lower())


def _workload(s: dict, arch: Architecture, layout: Layout) -> memory_model.Workload:
    init = (s.get("model_init_kwargs") or {}).get("dtype", "float32")  # TRL 1.16 loads in float32 unless told
    init = arch.dtype if init == "auto" else str(init).removeprefix("torch.")
    half = bool(s["bf16"] or s["fp16"])
    if layout.zero and half:
        mode, param_bytes = "bf16", 2  # DeepSpeed keeps half-precision weights (fp32 masters in the optimizer)
    elif init in ("bfloat16", "float16"):
        mode, param_bytes = "bf16", 2
    else:
        mode, param_bytes = ("autocast" if half else "fp32"), 4
    steps = _steps_per_generation(s, layout)
    gen = s["per_device_train_batch_size"] * steps
    if s["use_peft"]:
        target = tuple(s["lora_target_modules"]) if s["lora_target_modules"] else None
        trainable = lora_parameters(arch.source, s["lora_r"], s["lora_alpha"], target)
    else:
        trainable = arch.params
    vllm = bool(s.get("use_vllm"))
    eager = (s.get("model_init_kwargs") or {}).get("attn_implementation") == "eager"
    return memory_model.Workload(
        batch=s["per_device_train_batch_size"], generation_batch=gen, accumulation=s["gradient_accumulation_steps"],
        prompt_tokens=layout.prompt_text_tokens + arch.image_tokens(s["max_pixels"]),
        image_patches=arch.image_patches(s["max_pixels"]), completion_tokens=s["max_completion_length"],
        mode=mode, param_bytes=param_bytes, ref_bytes=0 if s["use_peft"] else param_bytes,
        gradient_checkpointing=bool(s["gradient_checkpointing"]), eager_attention=eager, reference=s["beta"] != 0,
        trainable=trainable, gpus=layout.gpus, zero=layout.zero, offload=layout.offload, device=layout.device,
        hf_generate=not vllm,
        exact_kl=s["beta"] != 0 and not s["use_peft"] and (s["kl_approximator"] == "exact" or s["exact_kl_every"] > 0),
        old_logps=(vllm and bool(s.get("vllm_importance_sampling_correction", True)))
        or s["gradient_accumulation_steps"] % (steps * s["num_iterations"]) != 0,
    )


def _steps_per_generation(s: dict, layout: Layout) -> int:
    """Micro-steps per generation round (TRL: `generation_batch_size / (per_device_train_batch_size * gpus)`, by
    default `gradient_accumulation_steps`)."""
    if s["steps_per_generation"]:
        return s["steps_per_generation"]
    if s["generation_batch_size"]:
        return max(1, s["generation_batch_size"] // (s["per_device_train_batch_size"] * layout.gpus))
    return s["gradient_accumulation_steps"]


def _vllm(s: dict, arch: Architecture, w: memory_model.Workload, layout: Layout) -> dict:
    """vLLM colocated in each training process: its share of the GPU, and whether weights + KV cache fit in it."""
    if not s.get("use_vllm") or s.get("vllm_mode", "colocate") != "colocate":
        return {}
    tp = s.get("vllm_tensor_parallel_size") or 1
    share = int(s.get("vllm_gpu_memory_utilization", 0.3) * layout.gpu_mem_gib * GIB)
    weights = arch.params * (4 if arch.dtype == "float32" else 2) // tp
    batched = 4096  # TRL builds the engine with max_num_batched_tokens=4096; vLLM profiles that forward
    activations = batched * (3 * arch.hidden + 3 * arch.intermediate) * 2 + batched * arch.vocab * 4
    per_token = 2 * arch.layers * arch.kv_heads * arch.head_dim * 2 // tp
    kv = share - weights - activations
    max_len = s.get("vllm_max_model_length") or w.seq
    return {"share": share, "weights": weights, "activations": activations, "kv_cache": max(kv, 0),
            "sequences": max(kv, 0) // (per_token * w.seq), "fits": kv >= per_token * max_len,
            "sleep": bool(s.get("vllm_enable_sleep_mode")), "tp": tp}


def _estimate(s: dict, arch: Architecture, layout: Layout, source: str) -> MemoryPlan:
    w = _workload(s, arch, layout)
    phases = memory_model.phases(arch, w)
    no_gc = memory_model.phases(arch, replace(w, gradient_checkpointing=not w.gradient_checkpointing))
    return MemoryPlan(source=source, arch=arch, layout=layout, settings=s, workload=w,
                      parts=memory_model.parts(arch, w), phases=phases, without_checkpointing=no_gc,
                      vllm=_vllm(s, arch, w, layout))


def plan(config, gpus: int | None = None, gpu_mem: float | None = None, zero: int | None = None,
         offload: bool | None = None, device: str = "cuda", prompt_text_tokens: int = 256) -> MemoryPlan:
    """Estimate the per-device memory of a run.

    Args:
        config (`MMR1Config`, `dict` or path of a YAML preset): The run.
        gpus, gpu_mem, zero, offload: The `Layout`; unset values come from the preset's `# GPUs:` comment, else
            1 GPU of 80 GiB without ZeRO.
        device (`str`, defaults to `"cuda"`): `"cpu"` plans the CPU's kernels (used to calibrate the model).
        prompt_text_tokens (`int`, defaults to 256): Text tokens of the longest prompt (template and system prompt
            included); image tokens come from `max_pixels` and the architecture.

    Returns:
        `MemoryPlan`, with `largest` holding the largest `num_generations`, `per_device_train_batch_size` and
        `max_pixels` that fit with everything else as set.
    """
    base = preset_layout(config) if isinstance(config, (str, Path)) else None
    base = base or Layout()
    layout = Layout(gpus=gpus or base.gpus, gpu_mem_gib=gpu_mem or base.gpu_mem_gib,
                    zero=base.zero if zero is None else zero, offload=base.offload if offload is None else offload,
                    device=device, prompt_text_tokens=prompt_text_tokens)
    if layout.zero not in (0, 1, 2, 3) or layout.gpus < 1 or layout.gpu_mem_gib <= 0:
        raise ValueError(f"plan: need gpus >= 1, gpu_mem > 0 and zero in 0..3, got {layout}")
    settings, source = load_settings(config)
    arch = read_architecture(str(settings["model_name_or_path"]))
    result = _estimate(settings, arch, layout, source)
    result.largest = largest_fitting(settings, arch, layout)
    return result


# --- what would fit -------------------------------------------------------------------------------------------------

def _fits(s: dict, arch: Architecture, layout: Layout) -> bool:
    return _estimate(s, arch, layout, "").fits


def _steps_for_group(s: dict, layout: Layout, group: int) -> int | None:
    """Steps per generation holding whole groups of `group` completions (TRL's divisibility rule), or None."""
    per = s["per_device_train_batch_size"] * layout.gpus
    start = _steps_per_generation(s, layout)
    return next((k for k in range(start, start + group + 1) if (per * k) % group == 0), None)


def largest_fitting(s: dict, arch: Architecture, layout: Layout, limit: int = SEARCH_LIMIT) -> dict:
    """The largest `num_generations`, `per_device_train_batch_size` and `max_pixels` that fit, each varied alone.

    A larger group needs a larger generation batch (more steps per generation: TRL generates whole groups), so it
    costs generation memory. `None` where even the smallest value does not fit; `max_pixels` is `None` for a
    fixed-size vision tower (CLIP).
    """
    out = {"num_generations": None, "per_device_train_batch_size": None, "max_pixels": None}
    for group in range(2, limit + 1):
        steps = _steps_for_group(s, layout, group)
        if steps is not None and _fits({**s, "num_generations": group, "steps_per_generation": steps}, arch, layout):
            out["num_generations"] = group
    steps = _steps_per_generation(s, layout)
    for batch in range(1, limit + 1):
        if (batch * layout.gpus * steps) % s["num_generations"] == 0:
            if not _fits({**s, "per_device_train_batch_size": batch, "steps_per_generation": steps}, arch, layout):
                break
            out["per_device_train_batch_size"] = batch
    if arch.vision != "clip":
        unit = (arch.patch * arch.merge) ** 2
        lo, hi = 0, 65536  # image tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _fits({**s, "max_pixels": mid * unit}, arch, layout) else (lo, mid - 1)
        out["max_pixels"] = lo * unit if lo else None
    return out


@dataclass(frozen=True)
class Change:
    """One change of the run: `text` for people, `settings` (fields to set) and `layout` (None: unchanged)."""

    text: str
    settings: dict
    layout: Layout | None = None


def smallest_changes(p: MemoryPlan) -> list[Change]:
    """Single changes that make an unfit run fit: free ones first (gradient checkpointing, a higher ZeRO stage,
    vLLM's share when vLLM itself is short), then the knob that needs the smallest relative cut, then LoRA."""
    s, arch, layout = p.settings, p.arch, p.layout
    changes = []

    def fits(change: dict, new_layout: Layout | None = None) -> bool:
        return _fits({**s, **change}, arch, new_layout or layout)

    if not s["gradient_checkpointing"] and fits({"gradient_checkpointing": True}):
        changes.append(Change("gradient_checkpointing=True", {"gradient_checkpointing": True}))
    stage = next((k for k in ZERO_CONFIGS if k > layout.zero and layout.gpus > 1 and fits({}, replace(layout, zero=k))),
                 None)
    if stage:
        changes.append(Change(f"DeepSpeed ZeRO-{stage} (accelerate launch --config_file configs/accelerate/"
                              f"zero{stage}.yaml)", {}, replace(layout, zero=stage)))
    util = s.get("vllm_gpu_memory_utilization", 0.3)
    if p.vllm and not p.vllm["fits"]:  # vLLM's share cannot hold its weights and one sequence's KV cache
        more = next((u / 100 for u in range(int(util * 100) + 5, 95, 5) if fits({"vllm_gpu_memory_utilization": u / 100})),
                    None)
        if more:
            changes.append(Change(f"vllm_gpu_memory_utilization={more}", {"vllm_gpu_memory_utilization": more}))
    candidates = []
    for name, value in (("per_device_train_batch_size", p.largest.get("per_device_train_batch_size")),
                        ("max_pixels", p.largest.get("max_pixels"))):
        if value and value < s[name]:
            candidates.append((value / s[name], Change(f"{name}={value} (from {s[name]})", {name: value})))
    length = next((n for n in range(s["max_completion_length"] - 16, 0, -16) if fits({"max_completion_length": n})),
                  None)
    if length:
        candidates.append((length / s["max_completion_length"],
                           Change(f"max_completion_length={length} (from {s['max_completion_length']})",
                                  {"max_completion_length": length})))
    if p.vllm and p.vllm["fits"]:
        less = next((u / 100 for u in range(int(util * 100) - 5, 0, -5) if fits({"vllm_gpu_memory_utilization": u / 100})),
                    None)
        if less:
            candidates.append((less / util, Change(f"vllm_gpu_memory_utilization={less}",
                                                   {"vllm_gpu_memory_utilization": less})))
    changes += [change for _, change in sorted(candidates, key=lambda c: -c[0])]
    if not s["use_peft"] and fits({"use_peft": True}):
        changes.append(Change("use_peft=True (LoRA)", {"use_peft": True}))
    return changes


# --- before training ------------------------------------------------------------------------------------------------

def _launch_layout(gpu_mem: float) -> Layout:
    """The layout of this launch, from what `accelerate launch` exports (`WORLD_SIZE`, `ACCELERATE_*`)."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    zero = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or 0) if deepspeed else 0
    offload = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") not in ("none", "")
    return Layout(gpus=int(os.environ.get("WORLD_SIZE") or 1), gpu_mem_gib=gpu_mem, zero=zero, offload=offload)


def warn_if_unfit(config) -> MemoryPlan | None:
    """Log a warning, with the plan's numbers and the smallest changes that would fit, when `config` will not fit.

    The GPU is the CUDA device of this process; without one, `MMR1KIT_GPU_MEM_GIB` names the memory to plan for,
    and otherwise nothing is planned (a CPU run). A model the planner cannot read is reported, not fatal.
    Returns the plan, or None when nothing was planned.
    """
    import torch

    gpu_mem = os.environ.get("MMR1KIT_GPU_MEM_GIB")
    if torch.cuda.is_available() and not config.use_cpu:
        gpu_mem = torch.cuda.get_device_properties(0).total_memory / GIB
    if gpu_mem is None or getattr(config, "process_index", 0) != 0:
        return None
    layout = _launch_layout(float(gpu_mem))
    try:
        result = plan(config, gpus=layout.gpus, gpu_mem=layout.gpu_mem_gib, zero=layout.zero, offload=layout.offload)
    except ValueError as e:
        logger.warning("memory plan skipped: %s", e)
        return None
    if not result.fits:
        changes = smallest_changes(result)
        logger.warning(
            "this run will probably not fit in GPU memory: about %.1f GiB per device (training peak %.1f GiB in the "
            "%s phase%s, reserve %.1f) for %.1f GiB (%s). Smallest changes that fit: %s. `mmr1kit plan` prints the "
            "whole table.", result.total / GIB, result.training_peak / GIB, result.peak_phase,
            f", vLLM share {result.vllm['share'] / GIB:.1f}" if result.vllm else "", result.reserve / GIB,
            layout.gpu_mem_gib, layout.describe(), "; or ".join(c.text for c in changes) or "none found")
    return result


# --- the `mmr1kit plan` command -------------------------------------------------------------------------------------

def add_command(sub) -> None:
    """Register `mmr1kit plan CONFIG [--gpus N] [--gpu-mem GiB] [--zero K] [--offload] [--prompt-tokens N]`."""
    p = sub.add_parser("plan", help="estimate a run's GPU memory per device and whether it fits")
    p.add_argument("config", type=Path, help="a YAML preset (MMR1Config fields)")
    p.add_argument("--gpus", type=int, help="training GPUs (default: the preset's '# GPUs:' comment, else 1)")
    p.add_argument("--gpu-mem", type=float, help="memory per GPU in GiB (default: the preset's comment, else 80)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), help="DeepSpeed ZeRO stage (0: DDP / one process)")
    p.add_argument("--offload", action="store_true", default=None, help="ZeRO CPU offload of the optimizer state")
    p.add_argument("--prompt-tokens", type=int, default=256, help="text tokens of the longest prompt (default 256)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    if not args.config.is_file():
        raise FileNotFoundError(f"{args.config}: no such preset")
    result = plan(args.config, gpus=args.gpus, gpu_mem=args.gpu_mem, zero=args.zero, offload=args.offload,
                  prompt_text_tokens=args.prompt_tokens)
    print(result.table())
    return 0 if result.fits else 1
