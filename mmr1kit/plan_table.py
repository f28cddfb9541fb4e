"""The table `mmr1kit plan` prints: each part per device, the phase peaks, vLLM's share, the total against the GPU,
the largest settings that fit and, for a run that does not fit, the single changes that would."""

from __future__ import annotations

from mmr1kit import memory_model
from mmr1kit.plan import CONTEXT_GIB, GIB, SEARCH_LIMIT, SLACK, MemoryPlan, smallest_changes


def _row(name: str, value: int, note: str) -> str:
    return f"{name:<34}{value / GIB:8.2f}  {note}"


def format_table(p: MemoryPlan) -> str:
    """One table: each part per device, the phase peaks, vLLM's share, the total against the GPU, what would fit."""
    w, a, x, s = p.workload, p.arch, p.parts, p.settings
    shard = f", sharded over {w.gpus}" if w.zero == 3 else ""
    gc_on, gc_off = ("on", "off") if w.gradient_checkpointing else ("off", "on")
    other = memory_model.activations(a, w, checkpointing=not w.gradient_checkpointing)
    image = a.image_tokens(s["max_pixels"])
    trained = f"LoRA: {w.trainable / 1e6:.1f}M trainable" if w.trainable < a.params else "all trained"
    if w.zero == 0:
        grads, state = ("DDP keeps a bucket copy" if w.gpus > 1 else "full"), "AdamW moments"
    else:
        grads = f"partitioned over {w.gpus}" if w.zero >= 2 else "full"
        state = "offloaded to the CPU" if w.offload else "fp32 master weights + AdamW moments, partitioned"
    if not w.reference:
        reference = "beta = 0: none"
    else:
        reference = "LoRA: the policy with adapters disabled" if not w.ref_bytes else (
            f"{'bf16' if w.ref_bytes == 2 else 'fp32'}{shard}")
    lines = [
        f"Memory plan: {p.source}",
        f"model {a.source}: {a.params / 1e9:.2f}B parameters ({a.vision_params / 1e9:.2f}B vision), {trained}",
        (f"per device: {w.batch} completions x {w.seq} tokens ({w.prompt_tokens - image} text + {image} image + "
         f"{w.completion_tokens} completion), generation batch {w.generation_batch}, {w.accumulation} micro-step(s); "
         f"{p.layout.describe()}; gradient checkpointing {gc_on}"),
        "",
        f"{'part':<34}{'GiB':>8}  note",
        _row("policy weights", x["weights"],
             {"fp32": "fp32", "autocast": "fp32 (bf16 autocast)", "bf16": "bf16"}[w.mode] + shard),
        _row("gradients", x["gradients"], grads),
        _row("optimizer state", x["optimizer"], state),
        _row("reference model", x["reference"], reference),
    ]
    if "gathered" in x:
        lines.append(_row("ZeRO-3 gathered parameters", x["gathered"], "a few layers / the LM head at a time"))
    if "autocast_copies" in x:
        lines.append(_row("autocast bf16 weight copies", x["autocast_copies"], "kept for backward"))
    lines += [
        _row("activations: language model", x["activations_language"],
             f"checkpointing {gc_on}; {gc_off}: {other['language'] / GIB:.2f}"),
        _row("activations: vision tower", x["activations_vision"],
             f"{w.image_patches} patches per image; checkpointing {gc_off}: {other['vision'] / GIB:.2f}"),
        _row("LM head: log-prob buffers", x["head"],
             "TRL's fused head: no (B, T, V) logits, a 4096 x 32768 tile, fp32 grad of the (V, H) head"),
        _row("rollout buffers", x["rollout_buffers"], "pixel values, ids, log-probs of the generation batch"),
    ]
    if "exact_kl" in x:
        lines.append(_row("exact KL (kl/exact)", x["exact_kl"], "256 positions' full-vocabulary logits at a time"))
    lines += [
        _row("reference / old log-prob pass", x["logprob_pass"], f"no-grad forward, {w.batch} completions at a time"),
        _row("generation", x["generation"], "HF generate: KV cache + prefill" if w.hf_generate
             else "vLLM (below) + the prompts' pixel values"),
        "",
        "phase peaks: " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in p.phases.items())
        + f" -> training peak {p.training_peak / GIB:.2f} GiB ({p.peak_phase}); with checkpointing {gc_off}: "
        + f"{max(p.without_checkpointing.values()) / GIB:.2f}",
    ]
    if p.vllm:
        v = p.vllm
        short = "; too small for one sequence" if not v["fits"] else ""
        lines.append(_row("vLLM colocated share", v["share"], (
            f"{s['vllm_gpu_memory_utilization']} x {p.layout.gpu_mem_gib:g} GiB: weights {v['weights'] / GIB:.1f} + "
            f"activations {v['activations'] / GIB:.1f} + KV cache {v['kv_cache'] / GIB:.1f} ({v['sequences']} "
            f"sequences at once{short})" + ("; sleeps while training" if v["sleep"] else ""))))
    verdict = (f"fits ({(p.budget - p.total) / GIB:.1f} GiB spare)" if p.fits
               else f"DOES NOT FIT ({(p.total - p.budget) / GIB:.1f} GiB over)")
    lines += [
        _row("reserve", p.reserve, f"CUDA context {CONTEXT_GIB:g} GiB + {SLACK:.0%} allocator slack"),
        _row("total per device", p.total, f"of {p.layout.gpu_mem_gib:g} GiB: {verdict}"),
        f"largest that fit, the rest as set (group size and batch searched up to {SEARCH_LIMIT}): "
        + ", ".join(f"{k} {'none' if v is None else v}" for k, v in p.largest.items()),
    ]
    if not p.fits:
        changes = smallest_changes(p)
        lines.append("to fit: " + ("; or ".join(c.text for c in changes) if changes else "no single change found"))
    return "\n".join(lines)
