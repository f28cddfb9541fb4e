r"""KL estimators, exact full-vocabulary KL and the Kimi k1.5 surrogate loss (group advantages: `mmr1kit.advantages`).

All functions are pure tensor functions. Shapes: `B` completions, `T` completion tokens, `V` vocabulary size,
`N = B` rewards (one per completion, `num_generations` consecutive completions per prompt).

Sampled-token estimators of `KL(pi_theta || pi_ref)` (Schulman, "Approximating KL divergence", 2020). The tokens are
sampled from `pi_theta` (the policy); `logp` and `ref_logp` are the log-probs of those tokens under the policy and
the reference. With `r = pi_ref(y) / pi_theta(y) = exp(ref_logp - logp)`:

| name | formula                               | MMR1 flag          | E_{pi_theta}[.]                    |
|------|---------------------------------------|--------------------|------------------------------------|
| k1   | `logp - ref_logp`  (= -log r)         | `k1`               | KL (unbiased, high variance, < 0 possible) |
| k2   | `0.5 * (logp - ref_logp) ** 2`        | `kimikl`, `kimi`   | KL + O(KL^{3/2}) (biased, >= 0)    |
| k3   | `r - log r - 1`                       | `k3` (TRL's GRPO)  | KL (unbiased, >= 0, low variance)  |

Differences from MMR1 (its `src/open_r1/trainer/grpo_trainer_vllm.py`; `docs/mmr1.md`, known bugs 5 and 10):

1. Both spellings of the Kimi names are accepted (`kimikl`/`kimi`, `fullkimi`/`kimifull`); MMR1 crashed on the
   README's.
2. `kimi_loss` is Kimi k1.5's sequence-level surrogate with `-A * log pi`, not MMR1's per-token `-A * exp(logp)`.
3. `exact` is new: the full-distribution KL, computed in vocabulary chunks.

No clamping of the log-ratio is applied (verl clamps k3 to [-10, 10]); callers that need it clamp the result.
"""

import contextlib

import torch

from mmr1kit.advantages import group_advantages  # noqa: F401  (its home is mmr1kit.advantages)
from mmr1kit.models import peft_base

ESTIMATORS = ("k1", "k2", "k3")
# MMR1 spellings -> our names. "kimifull" is a loss mode (see `kimi_loss`), "exact" is `exact()`, not estimators.
ALIASES = {"kimikl": "k2", "kimi": "k2", "fullkimi": "kimifull", "kimifull": "kimifull", "exact": "exact"}


def canonical_name(kind: str) -> str:
    """
    Map a KL name, including MMR1's spellings, to our canonical name.

    `"k1" | "k2" | "k3"` map to themselves, `"kimikl" | "kimi"` to `"k2"`, `"fullkimi" | "kimifull"` to `"kimifull"`
    and `"exact"` to `"exact"`.

    Raises:
        ValueError: `kind` is not one of the names above.
    """
    if kind in ESTIMATORS:
        return kind
    if kind in ALIASES:
        return ALIASES[kind]
    raise ValueError(f"Unknown KL name {kind!r}; valid names are {', '.join(ESTIMATORS + tuple(ALIASES))}.")


def estimate(kind: str, logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    r"""
    Per-token sampled estimate of `KL(pi_theta || pi_ref)`.

    Args:
        kind (`str`):
            `"k1"`, `"k2"` (aliases `"kimikl"`, `"kimi"`) or `"k3"`.
        logp (`torch.Tensor` of shape `(B, T)`):
            Log-probs under the policy of tokens sampled from the policy. Gradients flow through it.
        ref_logp (`torch.Tensor` of shape `(B, T)`):
            Log-probs of the same tokens under the reference.

    Returns:
        `torch.Tensor` of shape `(B, T)`: `k1 = logp - ref_logp`, `k2 = 0.5 * (logp - ref_logp)**2`,
        `k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1` (computed as `expm1(d) - d` for accuracy near 0).
        Padding positions are not masked; reduce with `sequence_mean` / `batch_mean`.

    Raises:
        ValueError: `kind` is not an estimator name (`"fullkimi"`, `"kimifull"` and `"exact"` are not estimators).
    """
    name = ALIASES.get(kind, kind)
    if name not in ESTIMATORS:
        valid = ESTIMATORS + tuple(k for k, v in ALIASES.items() if v in ESTIMATORS)
        raise ValueError(f"Unknown KL estimator {kind!r}; valid names are {', '.join(valid)}.")
    if name == "k1":
        return logp - ref_logp
    if name == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    d = ref_logp - logp
    return torch.expm1(d) - d


def estimate_all(logp: torch.Tensor, ref_logp: torch.Tensor) -> dict[str, torch.Tensor]:
    """All three estimators, `{"k1": (B, T), "k2": (B, T), "k3": (B, T)}`; see `estimate`."""
    return {name: estimate(name, logp, ref_logp) for name in ESTIMATORS}


def sequence_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """
    Masked mean over tokens of each sequence: `(B, T), (B, T) -> (B,)`, `sum_t x*m / max(sum_t m, 1)`.

    A row with an empty mask gives 0. Averaging this over the batch is TRL's `loss_type="grpo"` (and MMR1's).
    """
    mask = mask.to(x.dtype)
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def batch_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over all tokens of the batch: `(B, T), (B, T) -> ()`, `sum x*m / max(sum m, 1)` (TRL "dapo")."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _chunk_log_probs(logits, ref_logits, lse, ref_lse, start, stop, temperature, dtype):
    """`log pi` and `log pi_ref` on vocabulary slice `[start, stop)`, each `(..., stop - start)` in `dtype`."""
    logp = logits[..., start:stop].to(dtype) / temperature - lse.unsqueeze(-1)
    ref_logp = ref_logits[..., start:stop].to(dtype) / temperature - ref_lse.unsqueeze(-1)
    return logp, ref_logp


class _ExactKL(torch.autograd.Function):
    """Chunked `sum_v pi (log pi - log pi_ref)` whose backward also works chunk by chunk (nothing (..., V) saved)."""

    @staticmethod
    def forward(ctx, logits, ref_logits, temperature, chunk_size):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        vocab = logits.shape[-1]
        starts = range(0, vocab, chunk_size)
        # Pass 1: logsumexp of each chunk, then over chunks. Extra memory (..., V / chunk_size).
        lse = torch.stack(
            [torch.logsumexp(logits[..., s : s + chunk_size].to(dtype) / temperature, -1) for s in starts], -1
        ).logsumexp(-1)
        ref_lse = torch.stack(
            [torch.logsumexp(ref_logits[..., s : s + chunk_size].to(dtype) / temperature, -1) for s in starts], -1
        ).logsumexp(-1)
        # Pass 2: accumulate pi * (log pi - log pi_ref); terms with pi = 0 are 0 (also where log pi_ref = -inf).
        kl = torch.zeros_like(lse)
        for s in starts:
            logp, ref_logp = _chunk_log_probs(logits, ref_logits, lse, ref_lse, s, s + chunk_size, temperature, dtype)
            p = logp.exp()
            kl += torch.where(p > 0, p * (logp - ref_logp), 0.0).sum(-1)
        ctx.save_for_backward(logits, ref_logits, lse, ref_lse, kl)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl):
        logits, ref_logits, lse, ref_lse, kl = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        dtype = kl.dtype
        g = grad_kl.to(dtype).unsqueeze(-1) / temperature
        grad_logits = torch.empty_like(logits) if ctx.needs_input_grad[0] else None
        grad_ref = torch.empty_like(ref_logits) if ctx.needs_input_grad[1] else None
        for s in range(0, logits.shape[-1], chunk_size):
            logp, ref_logp = _chunk_log_probs(logits, ref_logits, lse, ref_lse, s, s + chunk_size, temperature, dtype)
            p = logp.exp()
            if grad_logits is not None:  # dKL/dz_v = pi_v (log pi_v - log pi_ref_v - KL), z = logits / T
                d = torch.where(p > 0, p * (logp - ref_logp - kl.unsqueeze(-1)), 0.0)
                grad_logits[..., s : s + chunk_size] = g * d
            if grad_ref is not None:  # dKL/dr_v = pi_ref_v - pi_v, r = ref_logits / T
                grad_ref[..., s : s + chunk_size] = g * (ref_logp.exp() - p)
        return grad_logits, grad_ref, None, None


def exact(
    logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float = 1.0, chunk_size: int = 4096
) -> torch.Tensor:
    r"""
    Exact per-token `KL(pi || pi_ref) = sum_v pi(v) (log pi(v) - log pi_ref(v))` over the full vocabulary.

    `pi = softmax(logits / temperature)` and `pi_ref = softmax(ref_logits / temperature)`: the same temperature
    divides both. It is computed as `sum_v pi(v) (z_v - r_v) - logsumexp(z) + logsumexp(r)` in two passes over
    vocabulary chunks (pass 1: logsumexp per chunk, combined; pass 2: the sum). Forward and backward each hold only
    `O(B * T * chunk_size)` temporaries besides the inputs and outputs (the backward writes the `(B, T, V)` gradient
    itself); the unchunked version needs several `(B, T, V)` float32 tensors. `chunk_size >= V` is one chunk.
    Computation is in float32 (float64 for float64 inputs); gradients come back in the input dtype.

    Gradients (implemented by hand, chunk by chunk, first order only):
    `dKL/dlogits_v = pi_v (log pi_v - log pi_ref_v - KL) / T` and `dKL/dref_logits_v = (pi_ref_v - pi_v) / T`.

    Args:
        logits (`torch.Tensor` of shape `(B, T, V)`):
            Policy logits (any leading shape works; the last dim is the vocabulary).
        ref_logits (`torch.Tensor` of shape `(B, T, V)`):
            Reference logits, same shape.
        temperature (`float`, *optional*, defaults to `1.0`):
            Divides both logits. Must be > 0.
        chunk_size (`int`, *optional*, defaults to `4096`):
            Vocabulary slice width. Need not divide `V`. Must be > 0.

    Returns:
        `torch.Tensor` of shape `(B, T)`: the KL per position, float32 (float64 for float64 inputs). Positions
        where `pi_ref(v) = 0 < pi(v)` give `+inf`.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    return _ExactKL.apply(logits, ref_logits, float(temperature), chunk_size)


def kimi_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, tau: float
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""
    Kimi k1.5 policy-optimisation surrogate (Kimi Team 2025, §2.3.2), sequence level.

    Kimi k1.5 minimises `E_j[(r_j - rbar - tau * log(pi_theta(y_j|x) / pi_ref(y_j|x)))^2]` with `pi_ref` the policy
    at the start of the iteration; its gradient is `2 tau` times that of the surrogate implemented here. Per
    completion `i`:

        seq_logp_i = sum_t logp_{i,t} m_{i,t}                      # log pi_theta(y_i | x)
        logratio_i = sum_t (logp_{i,t} - ref_logp_{i,t}) m_{i,t}   # log(pi_theta / pi_ref)(y_i | x)
        loss_i     = -A_i * seq_logp_i + (tau / 2) * logratio_i^2
        loss       = (1 / B) * sum_i loss_i

    Normalisation: tokens are **summed** (the paper's sequence log-prob) and completions averaged; there is no
    division by token counts, so the scale grows with completion length (a trainer may divide by a constant such as
    `max_completion_length`; that changes the step size, not the direction). Gradient, by hand
    (`ref_logp`, `A` constant):

        d loss / d logp_{i,t} = (tau * logratio_i - A_i) * m_{i,t} / B

    i.e. `(1/B) sum_i [-A_i + tau * logratio_i] grad log pi_theta(y_i|x)`, Kimi's update. At the first step of a
    round (`pi_theta == pi_ref`) the KL term is 0 in value and gradient; it acts only once the policy has moved
    (several optimizer steps per generation round). MMR1's `fullkimi` instead used `-A * exp(logp_t)` per token and a
    per-token `tau/2 (logp_t - ref_t)^2`, token-averaged.

    Args:
        logp (`torch.Tensor` of shape `(B, T)`):
            Policy log-probs of the sampled tokens, with grad.
        ref_logp (`torch.Tensor` of shape `(B, T)`):
            Log-probs of the same tokens under `pi_ref` (the policy when the completions were generated). Detached.
        advantages (`torch.Tensor` of shape `(B,)`):
            `r - group mean` (`group_advantages(..., scale="none")`). Detached.
        mask (`torch.Tensor` of shape `(B, T)`):
            1 for completion tokens, 0 for padding (bool or float).
        tau (`float`):
            Weight of the squared log-ratio (`beta`). Must be >= 0.

    Returns:
        `tuple[torch.Tensor, dict[str, float]]`: the scalar loss, and `{"pg_loss": mean_i(-A_i seq_logp_i),
        "kl_loss": mean_i(tau/2 logratio_i^2), "logratio": mean_i(logratio_i)}` (floats; `pg_loss + kl_loss`
        equals the loss).
    """
    if not tau >= 0:
        raise ValueError(f"`tau` must be >= 0, got {tau!r}.")
    mask = mask.to(logp.dtype)
    seq_logp = (logp * mask).sum(-1)
    logratio = ((logp - ref_logp.detach()) * mask).sum(-1)
    pg = -advantages.detach().to(logp.dtype) * seq_logp
    kl = 0.5 * tau * logratio**2
    loss = (pg + kl).mean()
    stats = {"pg_loss": pg.mean().item(), "kl_loss": kl.mean().item(), "logratio": logratio.mean().item()}
    return loss, stats


def exact_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ref_hidden: torch.Tensor,
    ref_weight: torch.Tensor,
    temperature: float = 1.0,
    token_chunk: int = 256,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Exact per-token KL and the reference's entropy from final hidden states, in token chunks.

    `exact()` needs `(B, T, V)` logits, which a real vocabulary (V = 151,936 for Qwen) makes gigabytes. Here the logits
    of `token_chunk` positions at a time are projected from the hidden states, scored and dropped; with gradients on,
    each chunk is recomputed in the backward pass (`torch.utils.checkpoint`), so peak memory holds only the hidden
    states plus one `(token_chunk, V)` block, never `(B, T, V)`.

    Args:
        hidden (`torch.Tensor` of shape `(B, T, H)`): Policy hidden states at the positions that predict the tokens.
        weight (`torch.Tensor` of shape `(V, H)`): Policy LM head.
        ref_hidden (`torch.Tensor` of shape `(B, T, H_ref)`): Reference hidden states (no gradient).
        ref_weight (`torch.Tensor` of shape `(V, H_ref)`): Reference LM head.
        temperature (`float`): Both distributions are `softmax(logits / temperature)`, as in the loss.

    Returns:
        `(kl, ref_entropy)`, both of shape `(B, T)`: `KL(pi || pi_ref)` (differentiable w.r.t. `hidden`) and
        `H(pi_ref)` (detached).
    """
    from torch.nn.functional import linear
    from torch.utils.checkpoint import checkpoint

    B, T, _ = hidden.shape
    flat, ref_flat = hidden.reshape(B * T, -1), ref_hidden.reshape(B * T, -1).detach()

    def chunk_kl(h, r):
        with torch.no_grad():
            ref_logits = linear(r, ref_weight) / temperature
        return exact((linear(h, weight) / temperature)[None], ref_logits[None], chunk_size=chunk_size)[0]

    kls, entropies = [], []
    for start in range(0, B * T, token_chunk):
        h, r = flat[start : start + token_chunk], ref_flat[start : start + token_chunk]
        kls.append(checkpoint(chunk_kl, h, r, use_reentrant=False) if h.requires_grad else chunk_kl(h, r))
        with torch.no_grad():
            ref_logp = (linear(r, ref_weight) / temperature).float().log_softmax(-1)
            entropies.append(-(ref_logp.exp() * ref_logp).sum(-1))
    return torch.cat(kls).view(B, T), torch.cat(entropies).view(B, T)


@contextlib.contextmanager
def capture_hidden(model, logits_to_keep: int, enabled: bool = True):
    """Keep the backbone's final hidden states `(B, T, H)` at the positions predicting the last `logits_to_keep`
    tokens, over every forward of `model` inside the block (chunks concatenated), in `captured["value"]`.

    TRL's fused LM head runs `model.base_model` and projects its `last_hidden_state`; the hook sees exactly that.
    """
    captured = {}
    if not enabled:
        yield captured
        return
    model = peft_base(model)
    chunks = []

    def hook(_module, _args, output):
        states = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        chunks.append(states[:, -logits_to_keep - 1 : -1])

    handle = model.base_model.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
        if chunks:
            captured["value"] = torch.cat(chunks)
