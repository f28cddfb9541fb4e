"""Trainer smoke tests on real tiny models: Qwen2.5-VL and LLaVA through the very same code path."""

import json
import math

import pytest
import torch

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.runs import load_run
from mmr1kit.trainer import MMR1Trainer


def length_reward(completions, **kwargs):
    """Graded reward: a random tiny model scores 0 on accuracy everywhere, which would leave every advantage 0."""
    return [len(c[0]["content"]) / 10.0 for c in completions]


def train_tiny(model_path, data_dir, run_dir, steps=3, **overrides):
    """One function for every architecture: no branch on the model's name or type."""
    config = MMR1Config.from_dict(
        dict(run_dir=str(run_dir), max_steps=steps, learning_rate=1e-2, per_device_train_batch_size=8,
             num_generations=4, max_completion_length=8, save_steps=steps, **overrides)
    )
    dataset = load_dataset(data_dir, "train", config)
    trainer = MMR1Trainer(model=str(model_path), reward_funcs=[length_reward], args=config, train_dataset=dataset)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    return trainer, before


# LLaVA-1.5 feeds the projector the last hidden state of CLIP, so CLIP's post-layernorm never gets a gradient.
UNUSED_BY_DESIGN = ("vision_tower.post_layernorm",)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["qwen_path", "llava_path"])
def test_every_trainable_parameter_changes_and_records_are_written(fixture, request, counting_dir, tmp_path):
    trainer, before = train_tiny(request.getfixturevalue(fixture), counting_dir, tmp_path / "run")
    unchanged = [
        n for n, p in trainer.model.named_parameters()
        if n in before and torch.equal(p, before[n]) and not any(u in n for u in UNUSED_BY_DESIGN)
    ]
    assert unchanged == []
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert len(history) == 3
    for h in history:
        for key in ("loss", "reward", "kl", "kl/k1", "kl/k2", "kl/k3", "kl/exact", "entropy", "entropy/ref",
                    "grad_norm", "temperature"):
            assert math.isfinite(h[key]), (key, h)
        phases = [h[f"timing/{p}"] for p in ("generate", "score", "ref", "policy", "record", "other")]
        assert all(t >= 0 for t in phases) and sum(phases) <= h["step_time"] * 1.01
        assert h["timing/generate"] > 0 and h["timing/ref"] > 0 and h["tokens_per_second/generate"] > 0

    run = load_run(tmp_path / "run")
    assert run.config["max_steps"] == 3 and run.manifest["versions"]["trl"]
    assert run.metrics["step"].tolist() == [1, 2, 3]
    assert len(run.rollouts) == 3 * 8  # every completion of every step, exactly once
    assert set(run.rollouts["step"]) == {1, 2, 3}
    assert {"prompt_id", "image", "completion", "rewards/length_reward", "advantage", "reward"} <= set(run.rollouts)
    groups = run.rollouts.groupby(["step", "group"])
    assert all(len(g) == 4 and g["prompt_id"].nunique() == 1 for _, g in groups)  # G completions of one prompt
    assert abs(groups["advantage"].sum()).max() < 1e-4  # advantages are centred within each group
    assert run.rollouts["truncated"].dtype == bool and run.rollouts["length"].between(1, 8).all()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3" / "model.safetensors").exists()
    assert "train/train_runtime" in run.summary


@pytest.mark.slow
def test_reward_scale_multiplies_the_summed_reward(qwen_path, counting_dir, tmp_path):
    trainer, _ = train_tiny(qwen_path, counting_dir, tmp_path / "run", steps=1, reward_scale=3.0, beta=0.0)
    rollouts = load_run(tmp_path / "run").rollouts
    assert rollouts["reward"].tolist() == pytest.approx((3.0 * rollouts["rewards/length_reward"]).tolist())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["reward_scale"] == 3.0
