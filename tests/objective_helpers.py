"""A real `MMR1Trainer` on the tiny Qwen2.5-VL, a real generation batch, and independent recomputations of the loss.

Shared by `test_trainer_objective.py` and `test_advantages.py`. The `expected_*` functions recompute a loss term from
its formula with a fresh forward pass of the same model (autograd on it gives the expected gradient); they never
call `MMR1Trainer._compute_loss` or `kl.estimate`.
"""

import torch

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.trainer import MMR1Trainer


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


BASE = {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 8, "num_generations": 4,
        "max_completion_length": 8, "save_strategy": "no", "report_to": "none", "bf16": False, "use_cpu": True,
        "gradient_checkpointing": False, "seed": 0, "logging_steps": 1}


def make(model_path, data_dir, run_dir, cls=MMR1Trainer, reward_funcs=(length_reward,), **overrides):
    config = MMR1Config.from_dict({**BASE, "run_dir": str(run_dir), **overrides})
    dataset = load_dataset(data_dir, "train", config)
    trainer = cls(model=str(model_path), reward_funcs=list(reward_funcs), args=config, train_dataset=dataset,
                  record=False)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; these tests call the loss directly
    return trainer


def batch_of(trainer, rows=None, training=True):
    """One real generation batch (completions, rewards, advantages, ref log-probs) as the loss sees it."""
    trainer.model.train(training)
    G = trainer.num_generations if training else trainer.num_generations_eval
    rows = rows if rows is not None else [trainer.train_dataset[i // G] for i in range(8)]
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(rows)


def move_policy(trainer, scale=0.05, seed=0):
    """Perturb every policy weight, so that the policy differs from the reference model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


def loss_and_grads(trainer, inputs):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), grads_of(trainer.model)


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def policy_logits(trainer, inputs, model=None):
    """`(B, T, V)` logits at the positions predicting the completion tokens, from a plain forward of the model."""
    model = trainer.model if model is None else model
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    T = inputs["completion_ids"].size(1)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=inputs["mm_token_type_ids"])
    return out.logits[:, -T - 1 : -1].float() / trainer.temperature


def token_logps(logits, inputs):
    """`(B, T)` log-probs of the sampled completion tokens."""
    return logits.log_softmax(-1).gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)


def seq_mean_then_batch_mean(per_token, mask):
    """TRL's / MMR1's `loss_type="grpo"` reduction, written out: per-sequence token mean, then batch mean."""
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def expected_policy_loss(logps, inputs):
    """GRPO's on-policy term: value `-A`, gradient `-A grad logp` (the ratio `exp(logp - sg(logp))` is 1)."""
    A = inputs["advantages"].unsqueeze(1)
    return seq_mean_then_batch_mean(-torch.exp(logps - logps.detach()) * A, inputs["completion_mask"])
