"""LoRA through TRL's `peft_config`: only the adapters train, and the reference is the adapter-disabled policy."""

import math

import pytest
import torch

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.train import peft_config_from
from mmr1kit.trainer import MMR1Trainer

peft = pytest.importorskip("peft", reason="peft is in the dev extra: pip install -c constraints.txt peft")


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


@pytest.mark.slow
def test_lora_trains_only_adapters_against_the_adapter_disabled_model(qwen_path, counting_dir, tmp_path):
    config = MMR1Config.from_dict(dict(
        run_dir=str(tmp_path / "run"), max_steps=2, learning_rate=1e-2, warmup_steps=0, per_device_train_batch_size=8,
        num_generations=4, max_completion_length=8, save_strategy="no", beta=0.04, seed=0))
    dataset = load_dataset(counting_dir, "train", config)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = MMR1Trainer(model=str(qwen_path), reward_funcs=[length_reward], args=config, train_dataset=dataset,
                          peft_config=lora)
    assert isinstance(trainer.model, peft.PeftModel)
    assert trainer.ref_model is None  # no second copy: TRL disables the adapters for the reference pass
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.train()

    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable  # every adapter weight moved, nothing else did
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == 2
    for h in history:
        for key in ("kl", "kl/k1", "kl/k2", "kl/k3"):
            assert math.isfinite(h[key]), (key, h)
    # lora_B starts at zero: at step 1 the policy IS the base model, so the KL to the reference is exactly 0; after
    # one update it is not. A reference that followed the adapters would give 0 at both steps.
    assert history[0]["kl/k1"] == 0 and history[0]["kl/k3"] == 0
    assert history[1]["kl/k3"] > 0


def test_peft_config_from_reads_trl_model_config_names():
    from mmr1kit.config import MMR1Config

    assert peft_config_from(MMR1Config()) is None
    lora = peft_config_from(MMR1Config(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.1,
                                       lora_target_modules=["q_proj", "v_proj"]))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (8, 16, 0.1, {"q_proj", "v_proj"})
    assert peft_config_from(MMR1Config(use_peft=True)).target_modules == "all-linear"
    with pytest.raises(ValueError, match="exact KL needs a separate reference model"):
        MMR1Config(use_peft=True, kl_approximator="exact")
