"""Sampling and scoring on one distribution (`docs/objective.md`, "Which distribution").

Two things, both wired into `MMR1Trainer` through small hooks:

- **Vision special tokens are never sampled.** `vision_token_ids` reads the image / video placeholders and the vision
  start / end markers from the model's config and processor (no model names); `suppress_vision_tokens` forbids them
  in both engines: transformers' `generate` through `suppress_tokens` (TRL 1.16 suppresses the image placeholder
  only), vLLM through `SamplingParams.bad_words` (TRL passes none). A sampled placeholder would otherwise crash the
  loss pass ("Image features and image tokens do not match") or silently shift the multimodal positions.
- **vLLM's importance-sampling ratio compares like with like.** TRL 1.16 builds vLLM with
  `logprobs_mode="processed_logprobs"`: the log-probs vLLM reports are those of the distribution it sampled from,
  after the suppressed tokens, the temperature, min-p, top-k and top-p (vLLM 0.31 `v1/sample/sampler.py`,
  `ops/topk_topp_sampler.py`). The trainer's log-probs are those of the untruncated, temperature-scaled policy, so
  with top-p 0.9 / top-k 50 TRL's ratio `pi_trainer / pi_vllm` is the kept probability mass per token, and its
  product over a completion vanishes with length (issue: 1e-16 at 32 tokens). `ProcessedLogprobs` computes, for the
  forward pass whose log-probs TRL uses for that ratio, the trainer's log-probs of the same processed distribution
  (`log_kept_mass`, in chunks of positions: never `(B, T, V)` logits), so the ratio measures only the engines'
  mismatch; afterwards the untruncated log-probs go back into the batch for the loss (the PPO ratio's denominator),
  and vLLM's log-probs are moved to the untruncated scale with the trainer's kept mass, so every later comparison
  (TRL's off-policy mask, the rollout check) is between like quantities too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from mmr1kit.models import peft_base

logger = logging.getLogger(__name__)

# Config / processor attributes that name a vision special token: image_token_id, video_token_id,
# vision_start_token_id, vision_end_token_id, image_token_index (LLaVA), vision_token_id (Qwen2-VL's <|vision_pad|>).
_VISION_ATTR = re.compile(r"^(image|video|vision)\w*_token_(id|index|ids)$")


def vision_token_ids(processor, config) -> list[int]:
    """The vision special tokens of a model: every integer attribute of `config` (and its sub-configs) or of
    `processor` named like `image_token_id`, `video_token_id`, `vision_start_token_id`, `image_token_index`, plus the
    processor's `all_special_multimodal_tokens`. Sorted, without duplicates; `[]` for a text-only model."""
    ids = set()

    def collect(value):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                ids.add(v)

    for source in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if source is not None:
            for name, value in source.to_dict().items():
                if _VISION_ATTR.match(name):
                    collect(value)
    for name in dir(processor):
        if _VISION_ATTR.match(name):
            collect(getattr(processor, name, None))
    tokenizer = getattr(processor, "tokenizer", processor)
    for token in getattr(processor, "all_special_multimodal_tokens", None) or []:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id:
            collect(token_id)
    return sorted(ids)


def vllm_bad_words(tokenizer, token_ids: list[int]) -> list[str]:
    """The strings vLLM's `SamplingParams.bad_words` needs to forbid `token_ids`: vLLM encodes each word and masks
    its last token (a one-token word: always). Raises `ValueError` for a token whose string does not encode back to
    exactly that one token, since vLLM would then forbid something else."""
    words = []
    for token_id in token_ids:
        word = tokenizer.convert_ids_to_tokens(token_id)
        encoded = tokenizer.encode(word, add_special_tokens=False) if word else []
        if encoded != [token_id]:
            raise ValueError(
                f"vision token {token_id} ({word!r}) encodes to {encoded}, not to itself: vLLM's bad_words cannot "
                f"forbid it; register it as a special token of the tokenizer"
            )
        words.append(word)
    return words


def suppress_vision_tokens(trainer) -> list[int]:
    """Forbid the model's vision special tokens in completions, in the engine the trainer samples with.

    transformers' `generate`: added to `suppress_tokens` (logits set to -inf before temperature, top-k and top-p).
    vLLM: added to `SamplingParams.bad_words` through `VLLMGeneration.generation_kwargs` (vLLM masks them before
    temperature, top-k and top-p, and its processed log-probs exclude them). Stores and returns the ids
    (`trainer.suppressed_token_ids`).
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    ids = vision_token_ids(trainer.processing_class, model.config)
    trainer.suppressed_token_ids = ids
    if not ids:
        return ids
    if trainer.use_vllm:
        gen = trainer.vllm_generation
        words = vllm_bad_words(trainer._tokenizer, ids)
        kwargs = dict(gen.generation_kwargs or {})
        kwargs["bad_words"] = list(dict.fromkeys(list(kwargs.get("bad_words") or []) + words))
        gen.generation_kwargs = kwargs
    else:
        merged = sorted(set(trainer.generation_config.suppress_tokens or []) | set(ids))
        trainer.generation_config.suppress_tokens = merged
        trainer.generation_kwargs["suppress_tokens"] = merged
    return ids


# --- the processed distribution -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingFilter:
    """What vLLM does to the logits before it samples and reports `processed_logprobs`, in vLLM 0.31's order:
    suppressed tokens to -inf, divide by `temperature`, min-p, top-k, top-p (on the top-k renormalised
    distribution). `top_k <= 0` and `top_p >= 1` and `min_p <= 0` are off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    suppressed: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True when the processed distribution is the temperature-scaled one (the ratio needs no alignment)."""
        return self.top_k <= 0 and self.top_p >= 1.0 and self.min_p <= 0.0 and not self.suppressed

    @classmethod
    def of_vllm(cls, vllm_generation, suppressed=()) -> SamplingFilter:
        """The filter a TRL `VLLMGeneration` samples with now: its attributes, overridden by its `generation_kwargs`
        as TRL does when it builds the `SamplingParams`."""
        params = {k: getattr(vllm_generation, k) for k in ("temperature", "top_k", "top_p", "min_p")}
        params.update({k: v for k, v in (vllm_generation.generation_kwargs or {}).items() if k in params})
        return cls(temperature=float(params["temperature"]), top_k=int(params["top_k"] or 0),
                   top_p=float(1.0 if params["top_p"] is None else params["top_p"]),
                   min_p=float(params["min_p"] or 0.0), suppressed=tuple(suppressed))


def _keep_mask(z: torch.Tensor, filt: SamplingFilter) -> torch.Tensor:
    """Apply `filt`'s suppression, min-p, top-k and top-p to temperature-scaled logits `z` `(N, V)` in place."""
    if filt.suppressed:
        z[:, list(filt.suppressed)] = float("-inf")
    if filt.min_p > 0:  # vLLM's MinPLogitsProcessor: drop p < min_p * max p
        probs = z.softmax(-1)
        z.masked_fill_(probs < filt.min_p * probs.amax(-1, keepdim=True), float("-inf"))
    V = z.size(-1)
    k = filt.top_k if 0 < filt.top_k < V else 0
    if not k and filt.top_p >= 1.0:
        return z
    # top-k keeps every logit >= the k-th largest; top-p then works on that renormalised set, ascending, and drops
    # the tokens whose cumulative mass (smallest first) is <= 1 - top_p, keeping at least the largest.
    candidates = (z.topk(k, dim=-1).values if k else z).sort(dim=-1).values  # (N, k or V), ascending
    threshold = candidates[:, :1]
    if filt.top_p < 1.0:
        cumulative = candidates.softmax(-1).cumsum(-1)
        drop = cumulative <= 1.0 - filt.top_p
        drop[:, -1] = False
        threshold = candidates.masked_fill(drop, float("inf")).amin(-1, keepdim=True)
    return z.masked_fill_(z < threshold, float("-inf"))


@torch.no_grad()
def log_kept_mass(hidden: torch.Tensor, head: torch.nn.Module, tokens: torch.Tensor, filt: SamplingFilter,
                  softcap: float | None = None, max_elements: int = 2**23) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Log of the probability mass the sampling filter keeps, and whether it keeps each sampled token, from final hidden
    states in chunks of positions (peak memory: one `(chunk, V)` block, never `(B, T, V)`). The head is called as a
    module, so DeepSpeed ZeRO-3's hooks gather its weight (not run here: no GPU).

    For a position with temperature-scaled logits `z`, `log_mass = logsumexp(z[kept]) - logsumexp(z)`, so the
    processed distribution's log-prob of a kept token is `log_softmax(z)[y] - log_mass`.

    Args:
        hidden (`torch.Tensor` of shape `(B, T, H)`): Final hidden states at the positions that predict `tokens`.
        head (`torch.nn.Module`): The LM head (`model.get_output_embeddings()`), weight `(V, H)`, optional bias.
        tokens (`torch.Tensor` of shape `(B, T)`): The sampled tokens.
        filt (`SamplingFilter`): Temperature, suppressed tokens, min-p, top-k, top-p.
        softcap (`float`, *optional*): The model's `final_logit_softcapping` (applied before the temperature).

    Returns:
        `(log_mass, kept, logps)`, all `(B, T)`: float32 log of the kept mass (<= 0), a bool that is False where the
        filter would have removed the sampled token, and the untruncated log-probs of `tokens` (a cross-check).
    """
    B, T, H = hidden.shape
    V = getattr(head, "out_features", None) or head.weight.size(0)  # ZeRO-3 empties weight outside the forward
    flat, flat_tokens = hidden.reshape(B * T, H), tokens.reshape(B * T, 1)
    chunk = max(1, max_elements // V)
    masses, kept, logps = [], [], []
    for start in range(0, B * T, chunk):
        z = head(flat[start : start + chunk].to(head.weight.dtype)).float()
        if softcap:
            z = torch.tanh(z / softcap) * softcap
        z = z / filt.temperature
        full = z.logsumexp(-1)
        logps.append(z.gather(1, flat_tokens[start : start + chunk]).squeeze(1) - full)
        z = _keep_mask(z, filt)
        masses.append(z.logsumexp(-1) - full)
        kept.append(z.gather(1, flat_tokens[start : start + chunk]).squeeze(1) > float("-inf"))
    return tuple(torch.cat(x).view(B, T) for x in (masses, kept, logps))


class ProcessedLogprobs:
    """The trainer hook that makes TRL's vLLM importance-sampling ratio compare like with like.

    `MMR1Trainer` calls `arm()` before TRL's `_generate_and_score_completions`; the next policy pass without
    entropies (the one whose log-probs TRL compares with vLLM's, `old_per_token_logps`) asks `wants()`, captures its
    final hidden states and returns `processed(...)`: its log-probs of vLLM's processed distribution, so TRL's ratio,
    its `sampling/importance_sampling_ratio/*` and `sampling/sampling_logp_difference/*` logs measure only the
    engines' mismatch. `finish(output)` then puts the untruncated log-probs back (the loss's PPO ratio divides by them)
    and shifts vLLM's by the trainer's kept mass, and logs `sampling/outside_truncation` (the fraction of completion
    tokens vLLM sampled that the trainer's filter would have cut: a token at the top-p boundary whose side differs by
    rounding). Such a token keeps the ratio of the two engines' log-probs as if it had been kept.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.armed = False
        self.last = None  # (untruncated logps (B, T), log_mass (B, T), kept (B, T)) of the last processed pass

    def filter(self) -> SamplingFilter | None:
        t = self.trainer
        if not t.use_vllm:
            return None
        return SamplingFilter.of_vllm(t.vllm_generation, getattr(t, "suppressed_token_ids", ()))

    def arm(self, force: bool = False) -> None:
        """Arm for the next policy pass: when TRL will compute the ratio (or always, with `force`)."""
        t = self.trainer
        filt = self.filter()
        self.armed = filt is not None and not filt.is_identity and (force or t.vllm_importance_sampling_correction)
        self.last = None

    def wants(self, model, compute_entropy: bool) -> bool:
        return self.armed and model is self.trainer.model and not compute_entropy

    def processed(self, model, logps: torch.Tensor, hidden: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
        """`logps` `(B, T)` of the untruncated policy -> log-probs of vLLM's processed distribution `(B, T)`.

        `hidden` `(B, T, H)`: the pass's final hidden states at the positions predicting the last `T` tokens of
        `input_ids` `(B, L)`; `attention_mask` `(B, L)` is 0 at padding (where TRL's log-probs are 0)."""
        self.armed = False
        T = logps.size(1)
        tokens, mask = input_ids[:, -T:], attention_mask[:, -T:]
        module = peft_base(self.trainer.accelerator.unwrap_model(model))
        softcap = getattr(module.config.get_text_config(), "final_logit_softcapping", None)
        log_mass, kept, check = log_kept_mass(hidden, module.get_output_embeddings(), tokens, self.filter(), softcap)
        valid = mask.bool()
        gap = (check.to(logps.device) - logps)[valid].abs().mean().item() if valid.any() else 0.0
        # bf16 logits round by a few hundredths of a nat; a logit scale this head does not apply (TRL's fused head
        # knows several) is off by far more
        if gap > 0.5:
            raise RuntimeError(
                f"the LM head's log-probs computed from the hidden states differ from TRL's by {gap:.3f} on average: "
                f"{type(module).__name__}'s logits are not `head(hidden)`; the top-k/top-p aware importance ratio "
                f"cannot be computed (set vllm_importance_sampling_correction=False)")
        self.last = (logps, log_mass.to(logps.device), kept.to(logps.device))
        return logps - self.last[1]

    def finish(self, output: dict) -> None:
        """Untruncated log-probs back into `output["old_per_token_logps"]`; vLLM's onto the same scale."""
        if self.last is None or "sampling_per_token_logps" not in output:
            self.last = None
            return
        logps, log_mass, kept = self.last
        self.last = None
        mask = output["completion_mask"]
        output["old_per_token_logps"] = logps
        output["sampling_per_token_logps"] = output["sampling_per_token_logps"] + log_mass * mask
        t = self.trainer
        counts = t.accelerator.reduce(
            torch.stack([((~kept) & mask.bool()).sum(), mask.sum()]).double(), reduction="sum")
        mode = "train" if t.model.training else "eval"
        t._metrics[mode]["sampling/outside_truncation"].append(float(counts[0] / counts[1].clamp(min=1)))


def set_fused_head_temperature(model, temperature: float) -> None:
    """Change the temperature captured by TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`).

    The head divides the logits by a closure variable. Re-calling `add_fused_lm_head` would nest one wrapper per step,
    so the closure cell is rewritten instead. Does nothing on a model without the fused head.
    """
    func = getattr(getattr(model, "forward", None), "__func__", None)
    code = getattr(func, "__code__", None)
    if code is None or "temperature" not in code.co_freevars:
        return
    func.__closure__[code.co_freevars.index("temperature")].cell_contents = float(temperature)
