"""Sampling and scoring on one distribution (`mmr1kit.sampling`): the vision tokens both engines must never sample,
and the processed (suppressed, temperature, min-p, top-k, top-p) distribution the vLLM importance ratio compares.
The vLLM side runs in `tests/test_vllm.py` (`make test-vllm`)."""

import pytest
import torch
from policy_edits import favour_tokens, record_completions
from transformers import AutoTokenizer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from mmr1kit.models import load_processor
from mmr1kit.sampling import SamplingFilter, log_kept_mass, vision_token_ids, vllm_bad_words


def test_vision_tokens_come_from_the_config_and_processor(qwen_path, llava_path):
    from transformers import AutoConfig

    tok = AutoTokenizer.from_pretrained(qwen_path)
    ids = vision_token_ids(load_processor(qwen_path), AutoConfig.from_pretrained(qwen_path))
    names = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    assert ids == sorted(tok.convert_tokens_to_ids(names))
    llava = vision_token_ids(load_processor(llava_path), AutoConfig.from_pretrained(llava_path))
    assert llava == [tok.convert_tokens_to_ids("<image>")]  # LLaVA names it image_token_index; no video tokens
    # vLLM's bad_words are strings: each must encode back to exactly its token
    assert vllm_bad_words(tok, ids) == [tok.convert_ids_to_tokens(i) for i in ids]
    spaced = next(i for i in range(len(tok)) if tok.convert_ids_to_tokens(i).startswith("\u0120"))  # "Ġthe"-like
    with pytest.raises(ValueError, match=rf"vision token {spaced} \('\u0120.*'\) encodes to .*not to itself"):
        vllm_bad_words(tok, [ids[0], spaced])


def hf_processed(z, filt: SamplingFilter) -> torch.Tensor:
    """The oracle: transformers' own logits processors, chained in vLLM 0.31's order (suppress, temperature, min-p,
    top-k, top-p); a written-elsewhere implementation of the same rules."""
    chain = []
    if filt.suppressed:
        chain.append(SuppressTokensLogitsProcessor(list(filt.suppressed), device="cpu"))
    chain.append(TemperatureLogitsWarper(filt.temperature))
    if filt.min_p > 0:
        chain.append(MinPLogitsWarper(filt.min_p))
    if filt.top_k > 0:
        chain.append(TopKLogitsWarper(filt.top_k))
    if filt.top_p < 1:
        chain.append(TopPLogitsWarper(filt.top_p))
    return LogitsProcessorList(chain)(None, z.clone())


@pytest.mark.parametrize("filt", [
    SamplingFilter(0.9, top_k=50, top_p=0.9, suppressed=(3, 7, 11)),
    SamplingFilter(1.0, top_p=0.7),
    SamplingFilter(0.7, top_k=5),
    SamplingFilter(1.3, min_p=0.05, top_p=0.95),
    SamplingFilter(1.0, suppressed=(0, 1)),
])
def test_kept_mass_matches_transformers_processors(filt):
    torch.manual_seed(0)
    B, T, H, V = 3, 7, 16, 300
    head = torch.nn.Linear(H, V, bias=True)
    hidden = torch.randn(B, T, H) * 2
    with torch.no_grad():
        z = head(hidden).reshape(B * T, V)
    processed = hf_processed(z, filt)
    # tokens the filter keeps (sampled from it) and tokens it may cut (uniform, and a suppressed one)
    tokens = torch.randint(0, V, (B, T))
    tokens[:, :4] = processed.softmax(-1).multinomial(1).view(B, T)[:, :4]
    tokens[:, 4] = filt.suppressed[0] if filt.suppressed else tokens[:, 4]
    log_mass, kept, logps = log_kept_mass(hidden, head, tokens, filt, max_elements=V * 4)  # 4 positions per chunk
    full = (z / filt.temperature).log_softmax(-1)
    want_mass = processed.logsumexp(-1) - (z / filt.temperature).logsumexp(-1)
    torch.testing.assert_close(log_mass.reshape(-1), want_mass, atol=1e-5, rtol=0)
    want_kept = processed.gather(1, tokens.reshape(-1, 1)).squeeze(1) > float("-inf")
    assert torch.equal(kept.reshape(-1), want_kept) and kept.any() and (~kept).any()
    torch.testing.assert_close(logps.reshape(-1), full.gather(1, tokens.reshape(-1, 1)).squeeze(1))
    # for a kept token, untruncated log-prob minus the log kept mass is the processed distribution's log-prob
    processed_logp = processed.log_softmax(-1).gather(1, tokens.reshape(-1, 1)).squeeze(1)
    k = want_kept
    torch.testing.assert_close((logps.reshape(-1) - log_mass.reshape(-1))[k], processed_logp[k], atol=1e-5, rtol=0)
    assert filt.is_identity is False and (log_mass <= 1e-6).all()


def test_identity_filter_and_vllm_overrides():
    assert SamplingFilter(0.7).is_identity

    class Gen:  # the attributes TRL's VLLMGeneration reads when it builds SamplingParams
        temperature, top_k, top_p, min_p = 0.9, 50, 0.9, None
        generation_kwargs = {"top_p": 0.8, "bad_words": ["x"]}  # noqa: RUF012

    assert SamplingFilter.of_vllm(Gen(), (4,)) == SamplingFilter(0.9, top_k=50, top_p=0.8, min_p=0.0, suppressed=(4,))


@pytest.mark.slow
def test_hf_generate_never_samples_vision_tokens_of_a_policy_that_favours_them(qwen_path, counting_dir, tmp_path):
    """transformers' generate path: TRL suppresses only the image placeholder; a policy that puts its mass on the
    vision tokens then samples the video placeholder and the vision markers (the failing arm); with mmr1kit's
    suppression it samples none and trains."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    config = MMR1Config.from_dict(dict(
        run_dir=str(tmp_path / "run"), max_steps=2, learning_rate=1e-3, per_device_train_batch_size=8,
        num_generations=4, max_completion_length=8, save_strategy="no", beta=0.0, temperature=0.9, top_p=0.9,
        top_k=50, seed=0))
    dataset = load_dataset(counting_dir, "train", config)
    trainer = MMR1Trainer(model=str(qwen_path), reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=config, train_dataset=dataset, record=False)
    vision = set(trainer.suppressed_token_ids)
    assert len(vision) == 4 and set(trainer.generation_config.suppress_tokens) >= vision
    favour_tokens(trainer.model, trainer._tokenizer, sorted(vision))
    sampled = record_completions(trainer)
    # failing arm: TRL's own suppression (the image placeholder only)
    image = trainer.processing_class.image_token_id
    trainer.generation_config.suppress_tokens = trainer.generation_kwargs["suppress_tokens"] = [image]
    trainer._generate_and_score_completions([trainer.train_dataset[i // 4] for i in range(8)])
    hits = sum(t in vision for ids in sampled for t in ids) / sum(len(ids) for ids in sampled)
    assert hits > 0.5 and all(set(ids) & vision for ids in sampled) and not any(image in ids for ids in sampled)
    # mmr1kit's suppression: every vision token
    sampled.clear()
    trainer.generation_config.suppress_tokens = trainer.generation_kwargs["suppress_tokens"] = sorted(vision)
    trainer.train()
    assert len(sampled) == 2 * 8 and not any(t in vision for ids in sampled for t in ids)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_processed_logprobs_hook_on_a_real_policy(qwen_path):
    """The trainer hook without an engine: TRL's trainer and vLLM generation attributes as plain values, the real
    tiny policy, and transformers' logits processors as the oracle of the processed log-probs."""
    from collections import defaultdict
    from types import SimpleNamespace

    from accelerate import Accelerator
    from transformers import AutoModelForImageTextToText

    from mmr1kit.sampling import ProcessedLogprobs

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(qwen_path).train()  # as in training (no dropout here)
    gen = SimpleNamespace(temperature=0.9, top_k=50, top_p=0.9, min_p=None, generation_kwargs={"bad_words": ["x"]})
    trainer = SimpleNamespace(use_vllm=True, vllm_importance_sampling_correction=True, model=model,
                              accelerator=Accelerator(cpu=True), vllm_generation=gen, suppressed_token_ids=[3, 4],
                              _metrics={"train": defaultdict(list)})
    hook = ProcessedLogprobs(trainer)
    B, L, T = 4, 12, 6
    input_ids = torch.randint(5, 300, (B, L))
    attention_mask = torch.ones(B, L, dtype=torch.long)
    attention_mask[0, -2:] = 0  # a shorter completion
    with torch.no_grad():
        hidden = model.base_model(input_ids=input_ids).last_hidden_state[:, -T - 1 : -1]
        z = model.get_output_embeddings()(hidden).reshape(B * T, -1)
    tokens = input_ids[:, -T:]
    logps = (z / 0.9).log_softmax(-1).gather(1, tokens.reshape(-1, 1)).view(B, T)  # TRL's untruncated log-probs
    logps = logps * attention_mask[:, -T:]

    hook.arm()
    assert hook.wants(model, compute_entropy=False) and not hook.wants(model, compute_entropy=True)
    assert not hook.wants(object(), compute_entropy=False)
    processed = hook.processed(model, logps, hidden, input_ids, attention_mask)
    assert not hook.wants(model, compute_entropy=False)  # one pass per generation batch
    oracle = hf_processed(z, SamplingFilter(0.9, top_k=50, top_p=0.9, suppressed=(3, 4))).log_softmax(-1)
    oracle = oracle.gather(1, tokens.reshape(-1, 1)).view(B, T)
    kept, valid = oracle > float("-inf"), attention_mask[:, -T:].bool()
    assert (kept & valid).any() and (~kept & valid).any()
    torch.testing.assert_close(processed[kept & valid], oracle[kept & valid], atol=1e-5, rtol=0)

    vllm = processed.detach().clone()  # as if vLLM reported exactly the processed log-probs
    output = {"completion_mask": attention_mask[:, -T:], "old_per_token_logps": processed,
              "sampling_per_token_logps": vllm}
    hook.finish(output)
    assert output["old_per_token_logps"] is logps  # the loss's PPO ratio gets the untruncated log-probs back
    torch.testing.assert_close(output["sampling_per_token_logps"][valid], logps[valid])  # vLLM's, on that scale
    outside = trainer._metrics["train"]["sampling/outside_truncation"]
    assert outside == [pytest.approx(float((~kept & valid).sum() / valid.sum()))]

    with torch.no_grad():  # a head whose logits are not what TRL scored: refused, not silently wrong
        model.get_output_embeddings().weight.mul_(3.0)
    hook.arm()
    with pytest.raises(RuntimeError, match=r"differ from TRL's by .* vllm_importance_sampling_correction=False"):
        hook.processed(model, logps, hidden, input_ids, attention_mask)
