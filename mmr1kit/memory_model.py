"""The memory model behind `mmr1kit.plan`: bytes per device of each part of a GRPO step, and of each phase.

Everything here is arithmetic on an `Architecture` (`mmr1kit.architecture`) and a `Workload` (the run's shapes and
precisions). The coefficients of the activation terms were counted, not fitted: a `torch.autograd.graph.
saved_tensors_hooks` pack hook records every tensor a decoder layer / vision block saves for backward (transformers
5.23, SDPA attention, CPU), in fp32, under bf16 autocast over fp32 weights, and in pure bf16, for several widths; each
coefficient below is the measured slope (`tests/test_memory_model.py` re-measures them). `docs/memory.md` lists every
assumption; `benchmarks/bench_plan.py` checks the whole estimate against the peak the CPU allocator reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmr1kit.architecture import Architecture

TRL_TOKEN_CHUNK = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
TRL_VOCAB_CHUNK = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE (the tile width, whatever the vocabulary)
# Without Triton (CPU), trl.kernels.chunked_logprob folds a tile with torch ops: live tile-sized fp32 temporaries
# counted in the forward (z - max, exp, e * z) and the backward (zeros_like, two subs, two muls, exp, a float cast
# of the target mask and the mask itself); `tests/test_memory_model.py` re-counts them.
CPU_FOLD_FORWARD, CPU_FOLD_BACKWARD = 3, 7.25
KL_TOKEN_CHUNK = 256  # mmr1kit.kl.exact_from_hidden: positions whose (V,) logits are held at once
PIXEL_VALUES_PER_PATCH = {"qwen2_vl": 3 * 2 * 14 * 14, "qwen2_5_vl": 3 * 2 * 14 * 14, "clip": 3 * 14 * 14}

# Vision block, bytes saved per patch: (per unit of vision width Hv, per unit of MLP width Iv), measured.
VISION_SAVED = {
    "qwen2_5_vl": {"fp32": (52, 16), "autocast": (32, 8), "bf16": (30, 8)},  # RMSNorm, gated SiLU MLP
    "qwen2_vl": {"fp32": (44, 12), "autocast": (22, 6), "bf16": (22, 6)},  # LayerNorm, QuickGELU MLP
    "clip": {"fp32": (32, 12), "autocast": (24, 6), "bf16": (16, 6)},  # LayerNorm, QuickGELU MLP
}
VISION_FIXED = {"fp32": 22, "autocast": 24, "bf16": 14}  # patch embedding and merger, bytes per patch per Hv


@dataclass(frozen=True)
class Workload:
    """What one device runs, as the memory model needs it.

    Shapes: `batch` (completions per forward / backward, `per_device_train_batch_size`), `generation_batch`
    (completions generated at once on this device), `accumulation` (micro-steps per optimizer step), `prompt_tokens`
    (text + image tokens of the longest prompt), `image_patches` (vision-tower patches per prompt),
    `completion_tokens` (`max_completion_length`). `exact_kl`: mmr1kit's full-vocabulary KL runs in the loss step
    (`kl_approximator="exact"` or `exact_kl_every > 0` with a separate reference model).
    Precision: `mode` is `"fp32"`, `"autocast"` (bf16 / fp16 autocast over fp32 weights) or `"bf16"` (half-precision
    weights, as DeepSpeed keeps them); `param_bytes` of the policy's weights, `ref_bytes` of the reference's.
    Parallelism: `gpus`, `zero` (0: one process or DDP; 1, 2, 3: DeepSpeed ZeRO stage), `offload` (ZeRO offloads
    the optimizer state, and stage 3 the parameters, to the CPU). `device` is `"cuda"` or `"cpu"` (TRL's fused LM head
    scores only the completion tokens on CUDA, every position elsewhere).
    """

    batch: int
    generation_batch: int
    accumulation: int
    prompt_tokens: int
    image_patches: int
    completion_tokens: int
    mode: str
    param_bytes: int
    ref_bytes: int
    gradient_checkpointing: bool
    eager_attention: bool
    reference: bool
    trainable: int
    gpus: int
    zero: int
    offload: bool
    device: str
    hf_generate: bool
    old_logps: bool
    exact_kl: bool = False

    @property
    def seq(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _act_bytes(w: Workload) -> int:
    return 4 if w.mode in ("fp32", "autocast") else 2


def layer_saved_per_token(a: Architecture, w: Workload, seq: int) -> int:
    """Bytes one decoder layer saves for backward per token (its input included), SDPA or eager attention.

    fp32: `4 (6H + 2q + 2kv + 4I + heads + 2)`; bf16 autocast: `4 (4H + heads + 2) + 2 (5H + 2q + 2kv + 4I)`; pure
    bf16: `4 (2H + heads + 2) + 2 (4H + 2q + 2kv + 4I)`, with `q = heads * head_dim` and `kv = kv_heads * head_dim`.
    (In fp32 and under autocast the layer's fp32 input is among them; in bf16 its fp32 copy is.)
    Eager attention also keeps the `(heads, seq)` probabilities of every token (fp32, and a bf16 copy under bf16).
    """
    h, i, q, kv, nh = a.hidden, a.intermediate, a.heads * a.head_dim, a.kv_heads * a.head_dim, a.heads
    if w.mode == "fp32":
        saved = 4 * (6 * h + 2 * q + 2 * kv + 4 * i + nh + 2)
    else:
        autocast = w.mode == "autocast"
        saved = 4 * ((4 if autocast else 2) * h + nh + 2) + 2 * ((5 if autocast else 4) * h + 2 * q + 2 * kv + 4 * i)
    if w.eager_attention:
        saved += nh * seq * (4 if w.mode == "fp32" else 6)
    return saved


def vision_saved_per_patch(a: Architecture, w: Workload) -> int:
    """Bytes one vision block saves for backward per patch."""
    per_h, per_i = VISION_SAVED[a.vision][w.mode]
    return per_h * a.vision_hidden + per_i * a.vision_intermediate


def activations(a: Architecture, w: Workload, checkpointing: bool | None = None) -> dict[str, int]:
    """Saved activations of one loss forward of `w.batch` completions: `{"language": ..., "vision": ...}` bytes.

    With gradient checkpointing each layer keeps only its input, and the backward recomputes one layer at a time
    (its activations come on top while it runs). TRL enables it on the decoder layers and the vision blocks alike.
    """
    gc = w.gradient_checkpointing if checkpointing is None else checkpointing
    tokens = w.batch * w.seq
    patches = w.batch * w.image_patches
    act = _act_bytes(w)
    layer = layer_saved_per_token(a, w, w.seq) * tokens
    block = vision_saved_per_patch(a, w) * patches
    head_in = 3 * a.hidden * act * tokens  # the final norm (its input, normalised output, scaled output)
    fixed = VISION_FIXED[w.mode] * a.vision_hidden * patches + 4 * w.batch * w.seq**2  # patch embed/merger, mask
    if gc:
        language = a.layers * a.hidden * act * tokens + layer + head_in
        vision = a.vision_layers * a.vision_hidden * act * patches + block + fixed
    else:
        language = a.layers * layer + head_in
        vision = a.vision_layers * block + fixed
    return {"language": language, "vision": vision}


def head_buffers(a: Architecture, w: Workload, rows: int, backward: bool) -> int:
    """Peak extra bytes of TRL 1.16's fused, chunked LM head (`trl.kernels.ChunkedLogProbFunction`) for `rows`
    sequences: it never materialises `(B, T, V)` logits. Forward: the scored positions' hidden states `(N, H)` (a
    gathered copy on CUDA, a reshaped copy of every position elsewhere), seven fp32 statistics per position, one
    `(min(N, 4096), 32768)` logits tile. Backward: the tile again, `grad_hidden (N, H)` and `grad_weight (V, H)` in
    fp32 (and its cast when the weights are half precision)."""
    n = rows * (w.completion_tokens if w.device == "cuda" else w.seq - 1)
    tile_bytes = 4 if w.mode == "fp32" else 2
    tile = min(n, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * tile_bytes
    if w.mode == "autocast":
        tile += TRL_VOCAB_CHUNK * a.hidden * 2  # each vocabulary chunk of the fp32 head cast to bf16
    if w.device != "cuda":  # without Triton the tile is folded by torch ops, each a temporary of the tile's size
        folded = min(n, TRL_TOKEN_CHUNK) * min(a.vocab, TRL_VOCAB_CHUNK) * 4
        tile += (CPU_FOLD_BACKWARD if backward else CPU_FOLD_FORWARD) * folded
    kept = n * a.hidden * _act_bytes(w) + 7 * 4 * n  # the forward's tile is freed before the backward's
    if not backward:
        return kept + tile
    grad_weight = a.vocab * a.hidden * (4 + (2 if w.param_bytes == 2 else 0))
    return kept + tile + n * a.hidden * 4 + grad_weight


def forward_transient(a: Architecture, w: Workload, rows: int, tokens_per_row: int) -> int:
    """Peak of a no-grad forward over `rows` sequences (reference / old log-probs, or a generation prefill): the
    residual stream and one MLP's live intermediates (three `(tokens, I)` at once), and the vision tower's."""
    act = _act_bytes(w)
    language = rows * tokens_per_row * (3 * a.hidden + 3 * a.intermediate) * act
    vision = rows * w.image_patches * (3 * a.vision_hidden + 3 * a.vision_intermediate) * act
    return max(language, vision) + rows * w.image_patches * a.vision_hidden * act


def kv_cache(a: Architecture, w: Workload, rows: int, cache_bytes: int) -> int:
    """Keys and values of `rows` sequences of `seq` tokens over every layer."""
    return 2 * a.layers * a.kv_heads * a.head_dim * w.seq * rows * cache_bytes


def parts(a: Architecture, w: Workload) -> dict[str, int]:
    """Bytes per device of each part of the step (see `docs/memory.md` for each term)."""
    n, zero = w.gpus, w.zero
    p, trainable = a.params, w.trainable
    shard = n if zero == 3 else 1
    lora = trainable < p
    # Gradients and optimizer state: only for trainable parameters (PEFT keeps LoRA adapters in fp32, except under
    # ZeRO-3 where TRL keeps them in the weights' dtype).
    adapter_bytes = 4 if (lora and zero != 3) else w.param_bytes
    grad_bytes = adapter_bytes if lora else w.param_bytes
    out = {"weights": p * w.param_bytes // shard + (trainable * adapter_bytes // shard if lora else 0)}
    if zero == 0:
        out["gradients"] = trainable * grad_bytes * (2 if n > 1 else 1)  # DDP keeps a bucket copy of every gradient
        out["optimizer"] = trainable * 2 * (4 if lora else w.param_bytes)  # torch AdamW: exp_avg, exp_avg_sq
        # fused AdamW makes no full-size temporaries; mmr1kit's non-finite guard checks each gradient with
        # `torch.isfinite` (an abs copy and three boolean masks of the largest gradient at once)
        out["optimizer_step"] = a.largest_tensor * (w.param_bytes + 3)
    else:
        partition = 1 if zero == 1 else n
        out["gradients"] = trainable * grad_bytes // partition + 2 * 2 * a.hidden**2  # + reduce buckets
        out["optimizer"] = 0 if w.offload else trainable * 12 // n  # fp32 master weights + AdamW moments
        out["optimizer_step"] = trainable * 4 // n  # the fp32 gradient partition the step builds
    if zero == 3:  # parameters gathered around each module: a few layers, and the embeddings / LM head
        out["gathered"] = max(2 * a.largest_layer_params, a.vocab * a.hidden) * w.param_bytes
    out["reference"] = (p * w.ref_bytes // shard) if w.reference else 0  # ref_bytes 0 under LoRA: no copy
    if w.mode == "autocast":  # bf16 casts of every weight matrix the loss forward uses, saved for backward
        out["autocast_copies"] = (p - a.embed_params - a.head_params) * 2
    acts = activations(a, w)
    out["activations_language"] = acts["language"]
    out["activations_vision"] = acts["vision"]
    out["head"] = head_buffers(a, w, w.batch, backward=True)
    rows, per_row = w.generation_batch, w.image_patches * PIXEL_VALUES_PER_PATCH[a.vision] * 4
    out["rollout_buffers"] = rows * (per_row + w.seq * 8 * 3 + w.completion_tokens * 4 * 4)
    if w.exact_kl:  # the reference pass's final hidden states are kept with the batch; 256 positions' logits at once
        out["rollout_buffers"] += rows * w.completion_tokens * a.hidden * _act_bytes(w)
        out["exact_kl"] = 5 * KL_TOKEN_CHUNK * a.vocab * 4 + w.batch * w.completion_tokens * a.hidden * 4
    chunk = w.batch  # TRL runs the no-grad passes in chunks of per_device_train_batch_size
    out["logprob_pass"] = forward_transient(a, w, chunk, w.seq) + head_buffers(a, w, chunk, backward=False)
    if w.hf_generate:
        cache = kv_cache(a, w, rows, w.param_bytes)
        prefill = forward_transient(a, w, rows, w.prompt_tokens)
        sampling = rows * a.vocab * 4 * 6  # logits, processed scores, probabilities, top-k / top-p sort
        gathered = p * w.param_bytes * (n - 1) // n if zero == 3 else 0  # ds3_gather_for_generation
        out["generation"] = cache + prefill + sampling + gathered + rows * per_row
    else:
        out["generation"] = rows * per_row  # vLLM holds its own memory (see plan.vllm_share)
    return out


def phases(a: Architecture, w: Workload) -> dict[str, int]:
    """Peak bytes per device of each phase of a step: `generate`, `rollout` (reference and old log-prob passes),
    `loss` (forward and backward of the loss) and `optimizer`."""
    x = parts(a, w)
    persistent = x["weights"] + x["optimizer"] + x["reference"] + x.get("gathered", 0)
    grads = x["gradients"]
    saved = x["activations_language"] + x["activations_vision"] + x.get("autocast_copies", 0)
    backward_start = saved + max(x["head"], x.get("exact_kl", 0))  # the exact KL runs before the backward
    if w.accumulation > 1:  # later micro-steps run with the gradients of the earlier ones
        loss = grads + backward_start
    else:  # gradients grow as activations are freed; the vision tower's are freed last
        loss = max(backward_start, grads + x["activations_vision"])
    return {
        "generate": persistent + x["generation"],
        "rollout": persistent + x["rollout_buffers"] + (x["logprob_pass"] if (w.reference or w.old_logps) else 0),
        "loss": persistent + x["rollout_buffers"] + loss,
        "optimizer": persistent + grads + x["optimizer_step"],
    }
