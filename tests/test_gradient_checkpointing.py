"""Gradient (activation) checkpointing with the VLM: same loss and gradients on and off, and both towers recompute.

Checkpointing is switched on by the Trainer's own code path (`Trainer.train` enables it from the config), so each
trainer trains one step at learning rate 0 (weights unchanged) before the comparison.
"""

import pytest
import torch

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.trainer import MMR1Trainer


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


def trainer_with(qwen_path, counting_dir, tmp_path, checkpointing: bool):
    config = MMR1Config.from_dict(dict(
        run_dir=str(tmp_path / f"gc-{checkpointing}"), max_steps=1, warmup_steps=0,
        per_device_train_batch_size=8, num_generations=4, max_completion_length=8, save_strategy="no", beta=0.0,
        gradient_checkpointing=checkpointing, seed=0))
    config.learning_rate = 0.0  # MMR1Config refuses a run that cannot learn; this step must change nothing
    dataset = load_dataset(counting_dir, "train", config)
    trainer = MMR1Trainer(model=str(qwen_path), reward_funcs=[length_reward], args=config, train_dataset=dataset,
                          record=False)
    trainer.train()  # the Trainer enables checkpointing here, from the config
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def loss_grads_and_calls(trainer, inputs):
    """Loss, gradients, and how often the MLPs of the first vision block and first decoder layer ran forward."""
    model = trainer.model
    calls = {"vision": 0, "text": 0}

    def counter(name):  # a pre-hook: torch may stop a recomputation early, before a forward (post-)hook would run
        return lambda *args: calls.__setitem__(name, calls[name] + 1)

    # Hooks on a layer's own module stay outside its checkpoint (transformers checkpoints `forward`, not `__call__`),
    # so count the MLP inside the first vision block and the first decoder layer: a recomputation calls it again.
    hooks = [model.model.visual.blocks[0].mlp.register_forward_pre_hook(counter("vision")),
             model.model.language_model.layers[0].mlp.register_forward_pre_hook(counter("text"))]
    try:
        model.zero_grad()
        loss = trainer._compute_loss(model, dict(inputs))
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, calls


@pytest.mark.slow
def test_checkpointing_on_and_off_give_the_same_loss_and_gradients(qwen_path, counting_dir, tmp_path):
    plain = trainer_with(qwen_path, counting_dir, tmp_path, False)
    ckpt = trainer_with(qwen_path, counting_dir, tmp_path, True)
    for name, p in plain.model.state_dict().items():
        assert torch.equal(p, ckpt.model.state_dict()[name]), name  # lr 0: the weights are still the checkpoint's

    visual, text = ckpt.model.model.visual, ckpt.model.model.language_model
    assert visual.gradient_checkpointing and all(b.gradient_checkpointing for b in visual.blocks)
    assert text.gradient_checkpointing and all(layer.gradient_checkpointing for layer in text.layers)
    assert not plain.model.model.visual.gradient_checkpointing

    rows = [plain.train_dataset[i // 4] for i in range(8)]
    torch.manual_seed(0)
    inputs = plain._generate_and_score_completions(rows)
    assert inputs["advantages"].abs().sum() > 0  # a real signal, so the gradients are not trivially zero

    loss_a, grads_a, calls_a = loss_grads_and_calls(plain, inputs)
    loss_b, grads_b, calls_b = loss_grads_and_calls(ckpt, inputs)
    assert calls_a == {"vision": 1, "text": 1}
    assert calls_b == {"vision": 2, "text": 2}  # forward, then recomputed in backward: both towers checkpoint
    assert loss_b.item() == pytest.approx(loss_a.item(), abs=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert any(n.startswith("model.visual.blocks.0") for n in grads_b)  # the vision tower gets gradients
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-6, msg=name)
