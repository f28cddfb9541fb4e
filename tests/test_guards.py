"""A NaN in the loss of a real tiny run: skipped, counted, and after K in a row the run stops with a checkpoint."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.guards import NonFiniteTrainingError, all_finite
from mmr1kit.runs import load_run
from mmr1kit.trainer import MMR1Trainer


@pytest.mark.parametrize(("tensors", "expected"), [
    ([], True),
    ([torch.zeros(3), torch.ones(2, 2)], True),
    ([torch.zeros(3), torch.tensor([[1.0, float("nan")]])], False),
    ([torch.tensor([float("-inf")]), torch.zeros(2)], False),
    ([torch.zeros(2, dtype=torch.bfloat16), torch.tensor([float("inf")], dtype=torch.bfloat16)], False),
])
def test_all_finite(tensors, expected):
    assert all_finite(tensors) is expected


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


class NaNAtSteps(MMR1Trainer):
    """Fault injection: the loss of the listed optimizer steps (1-based) is NaN, as after an overflow."""

    nan_steps = ()

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        if self.state.global_step + 1 in self.nan_steps:
            loss = loss * float("nan")
        return loss


def run(tmp_path, data_dir, model_path, nan_steps, steps, **overrides):
    values = dict(run_dir=str(tmp_path / "run"), max_steps=steps, learning_rate=1e-2, per_device_train_batch_size=8,
                  num_generations=4, max_completion_length=8, beta=0.0, save_steps=1, save_total_limit=None)
    config = MMR1Config.from_dict({**values, **overrides})
    trainer = NaNAtSteps(model=str(model_path), reward_funcs=[length_reward], args=config,
                         train_dataset=load_dataset(data_dir, "train", config))
    trainer.nan_steps = nan_steps
    return trainer


@pytest.mark.slow
def test_a_nan_step_is_skipped_and_counted(qwen_path, counting_dir, tmp_path):
    trainer = run(tmp_path, counting_dir, qwen_path, nan_steps=(2,), steps=3)
    trainer.train()
    weights = {}
    for step in (1, 2, 3):
        weights[step] = load_file(str(tmp_path / "run" / "checkpoints" / f"checkpoint-{step}" / "model.safetensors"))
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # step 2 changed nothing
    assert any(not torch.equal(weights[2][k], weights[3][k]) for k in weights[2])  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in weights[3].values())
    run_ = load_run(tmp_path / "run")
    assert run_.metrics["nonfinite/skipped_steps"].tolist() == [0, 1, 1]
    assert run_.summary["nonfinite/steps"] == [2]
    index = json.loads((tmp_path / "run" / "checkpoints.json").read_text())
    assert [c["step"] for c in index] == [1, 2, 3]


@pytest.mark.slow
def test_consecutive_nan_steps_stop_the_run_with_a_checkpoint(qwen_path, counting_dir, tmp_path):
    trainer = run(tmp_path, counting_dir, qwen_path, nan_steps=(2, 3, 4, 5), steps=8, max_nonfinite_steps=2,
                  save_steps=100)
    with pytest.raises(NonFiniteTrainingError, match=r"stopped at step 3 after 2 consecutive"):
        trainer.train()
    assert trainer.state.global_step == 3
    final = load_file(str(tmp_path / "run" / "checkpoints" / "checkpoint-3" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in final.values())
    summary = load_run(tmp_path / "run").summary
    assert summary["nonfinite/steps"] == [2, 3] and "stopped at step 3" in summary["stopped"]
    assert math.isfinite(load_run(tmp_path / "run").metrics["grad_norm"].iloc[0])
