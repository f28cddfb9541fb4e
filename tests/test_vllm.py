"""vLLM rollouts through TRL's colocate mode, for real, on the CPU (`make test-vllm`: `.venv-vllm`, see
`tests/setup_vllm_cpu.sh`). Skipped where vLLM is not importable (the main `.venv`).

One CPU-only adaptation, nothing mocked: vLLM's CPU backend repacks linear weights, so TRL's colocate weight sync
(`model.load_weights`) fails there with `'Parameter' object has no attribute 'weight_loader'`; the tests sync through
vLLM's own `reload_weights` instead (`cpu_sync_weights`). On GPUs TRL's path is used unchanged.
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


def cpu_sync_weights(gen):
    """TRL's `VLLMGeneration.sync_weights` for vLLM's CPU backend: the same parameters, through `reload_weights`."""
    worker = gen.llm.llm_engine.model_executor.driver_worker.worker
    worker.reload_weights(weights_iterator=iter(list(gen._iter_named_params())))
    gen.llm.reset_prefix_cache()
    gen.llm.llm_engine.reset_encoder_cache()  # else the next image request misses the encoder cache


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
        num_generations=4, max_completion_length=8, save_strategy="no", beta=0.0, seed=0, use_vllm=True,
        vllm_mode="colocate", vllm_max_model_length=512))
    dataset = load_dataset(counting_dir, "train", config)
    model = tiny_vlm()  # the default tiny model: head_dim 32 (vLLM's CPU attention needs >= 32)
    trainer = MMR1Trainer(model=str(model), reward_funcs=[length_reward], args=config, train_dataset=dataset,
                          record=False)
    gen = trainer.vllm_generation
    gen.sync_weights = lambda: cpu_sync_weights(gen)
    trainer.model.train()
    return trainer


def rollout(trainer, collapse: bool, sync=True):
    """One real generation batch from vLLM, scored by the trainer, with the rollout check as the trainer hook runs it."""
    from mmr1kit.scale import feed_vllm_unexpanded_images, rollout_check

    gen = trainer.vllm_generation
    generate, sync_weights = gen.generate, gen.sync_weights
    if collapse:  # the proposed MMR1Trainer hook (docs/scale_out.md)
        feed_vllm_unexpanded_images(gen, trainer.processing_class.image_token_id)
    if not sync:
        gen.sync_weights = lambda: None
    try:
        rows = [trainer.train_dataset[i // 4] for i in range(8)]
        trainer._last_loaded_step = -1  # as at a new optimizer step: TRL syncs the weights before generating
        output = trainer._generate_and_score_completions(rows)
        return output, rollout_check(trainer, output)
    finally:
        gen.generate, gen.sync_weights, gen._mmr1kit_unexpanded = generate, sync_weights, False


@pytest.mark.slow
def test_rollout_check_flags_trl_prompt_corruption_and_passes_when_fixed(trainer):
    _, bad = rollout(trainer, collapse=False)
    fixed, good = rollout(trainer, collapse=True)
    assert torch.isfinite(fixed["sampling_per_token_logps"]).all()
    # TRL 1.16 hands vLLM processor-expanded image tokens, which vLLM expands again (huggingface/trl#6294)
    assert bad["logp_diff_mean"] > 0.05
    # with one placeholder per image, only the image resizing differs (vLLM's processor vs the trainer's PIL one)
    assert good["logp_diff_mean"] < 0.05 and good["logp_diff_max"] < 0.2
    logged = trainer._metrics["train"]["rollout/logp_diff_mean"]
    assert logged[-2:] == pytest.approx([bad["logp_diff_mean"], good["logp_diff_mean"]])


@pytest.mark.slow
def test_temperature_schedule_reaches_vllm_sampling_params(trainer):
    gen = trainer.vllm_generation
    seen, llm_generate = [], gen.llm.generate

    def spy(prompts, sampling_params=None, **kwargs):  # records what vLLM receives, then runs it unchanged
        seen.append(sampling_params.temperature)
        return llm_generate(prompts, sampling_params=sampling_params, **kwargs)

    gen.llm.generate = spy
    try:
        trainer.set_temperature(0.7)
        out, _ = rollout(trainer, collapse=True)
    finally:
        gen.llm.generate = llm_generate
        trainer.set_temperature(1.0)
    assert seen == [pytest.approx(0.7)]
    assert torch.isfinite(out["sampling_per_token_logps"]).all()


@pytest.mark.slow
def test_training_steps_sync_weights_into_vllm(trainer):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()  # two real optimizer steps with vLLM rollouts
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == 2 and "sampling/sampling_logp_difference/mean" in history[0]
    _, stale = rollout(trainer, collapse=True, sync=False)  # the engine still holds the weights of step 1
    _, synced = rollout(trainer, collapse=True, sync=True)
    assert synced["logp_diff_mean"] < 0.05
    assert stale["logp_diff_mean"] > 2 * synced["logp_diff_mean"]  # the check sees unsynced weights
