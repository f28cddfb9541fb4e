"""vLLM rollouts through TRL's colocate mode, for real, on the CPU (`make test-vllm`: `.venv-vllm`, see
`tests/setup_vllm_cpu.sh`). Skipped where vLLM is not importable (the main `.venv`).

Nothing is replaced by the tests: the trainer is `MMR1Trainer` as a user builds it. On vLLM's CPU platform TRL's
colocate weight sync (`model.load_weights`) fails (`'Parameter' object has no attribute 'weight_loader'`), so the
library itself routes it through vLLM's `reload_weights` there (`mmr1kit.vllm_sync`); these tests check that the
engine then holds the trainer's weights. The sampling is the GPU presets' (temperature 0.9, top-p 0.9, top-k 50).
The tests share one engine (module fixture) and run in file order.
"""

import importlib.util
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed in this environment: run `make test-vllm` (tests/setup_vllm_cpu.sh builds .venv-vllm)",
)

for var, value in (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("VLLM_CPU_KVCACHE_SPACE", "1")):
    os.environ.setdefault(var, value)  # in-process engine (fast); 1 GiB of KV cache (the default check fails here)


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, counting_dir):
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.models import tiny_vlm
    from mmr1kit.trainer import MMR1Trainer

    tmp = tmp_path_factory.mktemp("vllm")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp / "vllm-cache"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
    config = MMR1Config.from_dict(dict(
        run_dir=str(tmp / "run"), max_steps=2, learning_rate=5e-2, warmup_steps=0, per_device_train_batch_size=8,
        num_generations=4, max_completion_length=32, save_strategy="no", beta=0.0, seed=0, use_vllm=True,
        vllm_mode="colocate", vllm_max_model_length=512, temperature=0.9, top_p=0.9, top_k=50))
    dataset = load_dataset(counting_dir, "train", config)
    model = tiny_vlm()  # the default tiny model: head_dim 32 (vLLM's CPU attention needs >= 32)
    trainer = MMR1Trainer(model=str(model), reward_funcs=[length_reward], args=config, train_dataset=dataset,
                          record=False)
    trainer.model.train()
    return trainer


def rollout(trainer, fix=True, sync=True):
    """One real generation batch from vLLM, scored by the trainer (the rollout check runs inside, as in training).

    `fix=False` removes the huggingface/trl#6294 fix that `MMR1Trainer` installs on its `VLLMGeneration` (an instance
    attribute wrapping TRL's `generate`), so TRL's own `generate` runs; `sync=False` skips the weight sync that TRL
    triggers before generating at a new optimizer step."""
    gen = trainer.vllm_generation
    saved = dict(gen.__dict__)
    if not fix:
        del gen.generate
    if not sync:
        gen.sync_weights = lambda: None
    try:
        rows = [trainer.train_dataset[i // 4] for i in range(8)]
        trainer._last_loaded_step = -1  # as at a new optimizer step: TRL syncs the weights before generating
        output = trainer._generate_and_score_completions(rows)
        return output, trainer._metrics["train"]["rollout/logp_diff_mean"][-1]
    finally:
        gen.__dict__.update({k: saved[k] for k in ("generate", "sync_weights") if k in saved})


def log_ratios(output) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log importance ratio (trainer - vLLM, as TRL's ratio) `(B, T)` and the completion mask."""
    mask = output["completion_mask"].bool()
    diff = (output["old_per_token_logps"] - output["sampling_per_token_logps"]).nan_to_num(0.0)
    return diff * mask, mask


def cumulative_slope(output) -> float:
    """Least-squares slope (nats per token) of the mean summed log-ratio of a completion's first L tokens against L:
    the sequence-level ratio's drift with completion length (TRL's default ratio is per sequence)."""
    diff, _ = log_ratios(output)
    prefix = diff.cumsum(1).mean(0)
    L = torch.arange(1, prefix.numel() + 1, dtype=prefix.dtype)
    return float(((L - L.mean()) * (prefix - prefix.mean())).sum() / ((L - L.mean()) ** 2).sum())


@pytest.mark.slow
def test_rollout_check_flags_trl_prompt_corruption_and_passes_when_fixed(trainer):
    _, bad = rollout(trainer, fix=False)  # TRL 1.16's own generate: vLLM expands the expanded image tokens again
    fixed, good = rollout(trainer, fix=True)
    assert torch.isfinite(fixed["sampling_per_token_logps"]).all()
    assert bad > 0.05
    # with one placeholder per image, only the image resizing differs (vLLM's processor vs the trainer's PIL one)
    assert good < 0.05


@pytest.mark.slow
def test_sampling_params_carry_the_schedule_top_p_top_k_and_the_forbidden_vision_tokens(trainer):
    gen = trainer.vllm_generation
    seen, llm_generate = [], gen.llm.generate

    def spy(prompts, sampling_params=None, **kwargs):  # records what vLLM receives, then runs it unchanged
        seen.append(sampling_params)
        return llm_generate(prompts, sampling_params=sampling_params, **kwargs)

    gen.llm.generate = spy
    try:
        trainer.set_temperature(0.7)
        out, _ = rollout(trainer)
    finally:
        gen.llm.generate = llm_generate
        trainer.set_temperature(0.9)
    (params,) = seen
    assert (params.temperature, params.top_p, params.top_k) == (pytest.approx(0.7), pytest.approx(0.9), 50)
    tok = trainer._tokenizer
    assert sorted(tok.convert_tokens_to_ids(params.bad_words)) == trainer.suppressed_token_ids
    assert {"<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"} == set(params.bad_words)
    assert torch.isfinite(out["sampling_per_token_logps"]).all()


@pytest.mark.slow
def test_importance_ratio_measures_only_the_engine_mismatch_under_top_p_top_k(trainer):
    aligner = trainer.processed_logprobs
    aligner.arm = lambda force=False: None  # failing arm: TRL's ratio, untruncated trainer vs vLLM's processed
    try:
        raw, _ = rollout(trainer)
    finally:
        del aligner.arm
    raw_ratio = trainer._metrics["train"]["sampling/importance_sampling_ratio/mean"][-1]
    aligned, _ = rollout(trainer)
    ratio = trainer._metrics["train"]["sampling/importance_sampling_ratio/mean"][-1]
    # TRL's ratio is the product of the kept masses: it vanishes with length (issue 22: 1e-16)
    assert raw_ratio < 1e-3 and cumulative_slope(raw) < -0.1
    assert 0.5 <= ratio <= 2.0 and abs(cumulative_slope(aligned)) <= 0.01
    diff, mask = log_ratios(aligned)
    assert diff.abs().sum() / mask.sum() <= 0.05
    half = mask.size(1) // 2  # no trend along the completion either
    assert diff[:, half:].abs().sum() / mask[:, half:].sum() <= 0.05
    assert trainer._metrics["train"]["sampling/sampling_logp_difference/mean"][-1] <= 0.05
    # with TRL's correction off, the rollout check scores the processed distribution itself
    trainer.vllm_importance_sampling_correction = False
    try:
        unchecked, check = rollout(trainer)
    finally:
        trainer.vllm_importance_sampling_correction = True
    assert "old_per_token_logps" not in unchecked and check <= 0.05


def engine_weight_gap(trainer) -> tuple[float, int]:
    """Max |engine weight - trainer weight| over every parameter of vLLM's model, and how many were compared.

    vLLM runs a float32 checkpoint in bfloat16 on the CPU (it downcasts float32 models), so the trainer's tensors are
    cast to the engine's dtype: equal weights give exactly 0. The CPU backend repacks linear weights for oneDNN and
    leaves an empty parameter; those are read back exactly by multiplying the identity through the layer's own GEMM.
    vLLM fuses q/k/v and gate/up projections: the trainer's are concatenated in vLLM's order.
    """
    model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
    modules, hf = dict(model.named_modules()), dict(trainer.model.named_parameters())

    def trainer_tensor(name):  # vLLM's Qwen2.5-VL names -> the trainer's
        name = name.replace("language_model.model.", "model.language_model.")
        name = name.replace("language_model.lm_head.", "lm_head.")
        name = "model." + name if name.startswith("visual.") else name
        for fused, parts in (("qkv_proj", ("q_proj", "k_proj", "v_proj")), ("gate_up_proj", ("gate_proj", "up_proj"))):
            if f".{fused}." in name:
                return torch.cat([hf[name.replace(fused, p)] for p in parts])
        return hf[name]

    gap, n = 0.0, 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel():
                engine = param
            else:  # repacked: layer(I) = I @ W^T
                layer = modules[name.rsplit(".", 1)[0]]
                eye = torch.eye(layer.input_size_per_partition, dtype=param.dtype)
                engine = layer.cpu_linear(eye, param, None).t()
            mine = trainer_tensor(name).to(engine.dtype)
            gap, n = max(gap, float((engine.float() - mine.float()).abs().max())), n + 1
    return gap, n


@pytest.mark.slow
def test_training_steps_keep_the_ratio_near_one_and_sync_weights_into_vllm(trainer):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer._metrics["train"].clear()  # the rollouts above logged into the first step's averages
    trainer.train()  # two real optimizer steps with vLLM rollouts, TRL's ratio on, the presets' top-p / top-k
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == 2
    for h in history:
        assert 0.5 <= h["sampling/importance_sampling_ratio/mean"] <= 2.0, h
        assert h["sampling/sampling_logp_difference/mean"] <= 0.05 and h["rollout/logp_diff_mean"] <= 0.05, h
        # vLLM generates; the trainer's passes (old log-probs, loss) encode each image once for its group of 4
        assert h["vision/encoded"] * 4 == h["vision/encoded_by_trl"] > 0 and h["vision/fallback_images"] == 0, h
    # the engine holds the weights of the last sync (before step 2's update); TRL syncs at the next generation
    stale_gap, n = engine_weight_gap(trainer)
    _, stale = rollout(trainer, sync=False)
    _, synced = rollout(trainer, sync=True)  # TRL's trigger -> mmr1kit.vllm_sync's reload on the CPU platform
    gap, n_synced = engine_weight_gap(trainer)
    assert gap == 0.0 < stale_gap and n == n_synced == 43  # every tensor of the tiny Qwen2.5-VL, exactly
    assert synced < 0.05 and stale > 2 * synced  # the rollout check sees unsynced weights


@pytest.mark.slow
def test_vision_tokens_of_a_policy_that_favours_them_are_never_sampled(trainer):
    from policy_edits import favour_tokens, record_completions

    vision = trainer.suppressed_token_ids
    favour_tokens(trainer.model, trainer._tokenizer, vision)  # synced into vLLM at the next generation
    gen = trainer.vllm_generation
    sampled = record_completions(trainer)
    bad_words = gen.generation_kwargs.pop("bad_words")  # failing arm: vLLM as TRL configures it (nothing forbidden)
    try:
        with pytest.raises(ValueError, match="Image features and image tokens do not match"):  # issue 22
            rollout(trainer)
    finally:
        gen.generation_kwargs["bad_words"] = bad_words
    assert sum(t in vision for ids in sampled for t in ids) > 0.5 * sum(len(ids) for ids in sampled)
    assert all(set(ids) & set(vision) for ids in sampled)
    sampled.clear()
    trainer._metrics["train"].clear()
    try:
        trainer.train()
    finally:
        del trainer._generate
    assert len(sampled) == 2 * 8 and not any(t in vision for ids in sampled for t in ids)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == 2 and all(0.5 <= h["sampling/importance_sampling_ratio/mean"] <= 2.0 for h in history)
