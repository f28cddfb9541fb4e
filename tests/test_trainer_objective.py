"""The MMR1 objective inside the trainer: each option changes the loss as its formula says.

Every test builds a real MMR1Trainer on the tiny Qwen2.5-VL and a real generation batch, then recomputes the
loss by hand from the same tensors.
"""

import copy

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from mmr1kit import kl
from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.trainer import MMR1Trainer


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


BASE = dict(max_steps=2, learning_rate=1e-3, per_device_train_batch_size=8, num_generations=4,
            max_completion_length=8, save_strategy="no", report_to="none", bf16=False, use_cpu=True,
            gradient_checkpointing=False, seed=0, logging_steps=1)


def make(model_path, data_dir, tmp_path, **overrides):
    config = MMR1Config.from_dict({**BASE, "run_dir": str(tmp_path / "run"), **overrides})
    dataset = load_dataset(data_dir, "train", config)
    trainer = MMR1Trainer(model=str(model_path), reward_funcs=[length_reward], args=config, train_dataset=dataset,
                          record=False)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; these tests call the loss directly
    return trainer


def batch_of(trainer):
    """One real generation batch (completions, rewards, advantages, ref log-probs) as the loss sees it."""
    trainer.model.train()
    rows = [trainer.train_dataset[i // trainer.num_generations] for i in range(8)]
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(rows)


def loss_and_grads(trainer, inputs):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def policy_logps(trainer, inputs):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, inputs["completion_ids"].size(1), pixel_values=inputs["pixel_values"],
        image_grid_thw=inputs["image_grid_thw"], num_images=inputs["num_images"],
        mm_token_type_ids=inputs["mm_token_type_ids"])
    return logps


@pytest.mark.slow
def test_neutral_settings_reproduce_trl_exactly(qwen_path, counting_dir, tmp_path):
    ours = make(qwen_path, counting_dir, tmp_path, beta=0.04, loss_type="grpo")
    inputs = batch_of(ours)
    trl_args = GRPOConfig(output_dir=str(tmp_path / "trl"), beta=0.04, loss_type="grpo",
                          **{k: v for k, v in BASE.items()})
    theirs = GRPOTrainer(model=str(qwen_path), reward_funcs=[length_reward], args=trl_args,
                         train_dataset=ours.train_dataset, processing_class=ours.processing_class)
    theirs.current_gradient_accumulation_steps = 1
    theirs.model.load_state_dict(ours.model.state_dict())
    loss_a, grads_a = loss_and_grads(ours, inputs)
    loss_b, grads_b = loss_and_grads(theirs, copy.copy(inputs))
    assert loss_a == loss_b
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["k1", "k2"])
def test_estimator_in_the_loss_is_beta_times_its_masked_mean(kind, qwen_path, counting_dir, tmp_path):
    with_kl = make(qwen_path, counting_dir, tmp_path, beta=0.5, kl_approximator=kind, loss_type="grpo")
    inputs = batch_of(with_kl)
    inputs["ref_per_token_logps"] = inputs["ref_per_token_logps"] - 0.3  # a reference that differs
    loss_kl = with_kl._compute_loss(with_kl.model, inputs).detach()
    with_kl.args.use_kl = False
    loss_plain = with_kl._compute_loss(with_kl.model, inputs).detach()
    logps = policy_logps(with_kl, inputs).detach()
    mask = inputs["completion_mask"]
    expected = 0.5 * kl.sequence_mean(kl.estimate(kind, logps, inputs["ref_per_token_logps"]), mask).mean()
    assert (loss_kl - loss_plain).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.slow
def test_entropy_term_follows_mmr1_sign(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, beta=0.0, entropy_reg=True, entropy_weight=0.1, loss_type="bnpo")
    inputs = batch_of(trainer)
    loss_reg = trainer._compute_loss(trainer.model, inputs).detach()
    entropy = trainer._metrics["train"]["entropy"][-1]  # token mean over the batch (TRL's metric)
    trainer.args.entropy_reg = False
    loss_plain = trainer._compute_loss(trainer.model, inputs).detach()
    assert (loss_reg - loss_plain).item() == pytest.approx(-0.1 * entropy, rel=1e-4)  # w > 0 rewards entropy


@pytest.mark.slow
def test_exact_kl_is_logged_and_matches_a_direct_softmax(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, beta=0.1, kl_approximator="exact")
    with torch.no_grad():  # move the policy away from the reference
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inputs = batch_of(trainer)
    loss_exact = trainer._compute_loss(trainer.model, inputs)
    logged = trainer._metrics["train"]["kl/exact"][-1]
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    kw = dict(attention_mask=mask, pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
              mm_token_type_ids=inputs["mm_token_type_ids"])
    T = inputs["completion_ids"].size(1)
    with torch.no_grad():
        p = trainer.model(input_ids=ids, **kw).logits[:, -T - 1 : -1].log_softmax(-1)
        q = trainer.ref_model(input_ids=ids, **kw).logits[:, -T - 1 : -1].log_softmax(-1)
    direct = (p.exp() * (p - q)).sum(-1)
    cm = inputs["completion_mask"]
    assert logged == pytest.approx(((direct * cm).sum() / cm.sum()).item(), rel=1e-4)
    assert logged > 0
    assert loss_exact.requires_grad


@pytest.mark.slow
def test_kimi_loss_gradient_matches_the_hand_derived_one(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, beta=0.2, kl_approximator="fullkimi", scale_rewards="none",
                   num_iterations=2)
    inputs = batch_of(trainer)
    assert inputs["old_per_token_logps"] is not None  # num_iterations > 1: the round's sampling policy is kept
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # the policy moved within the round: the KL term bites
    loss, grads = loss_and_grads(trainer, inputs)
    # By hand: d loss / d logp_{i,t} = (tau * logratio_i - A_i) * m_{i,t} / B, then the chain rule through logp.
    trainer.model.zero_grad()
    logps = policy_logps(trainer, inputs)
    m = inputs["completion_mask"]
    logratio = ((logps.detach() - inputs["old_per_token_logps"]) * m).sum(1)
    weight = (0.2 * logratio - inputs["advantages"]).unsqueeze(1) * m / m.size(0)
    (logps * weight).sum().backward()
    hand = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    for name in grads:
        torch.testing.assert_close(grads[name], hand[name], rtol=1e-4, atol=1e-6)
    assert trainer._metrics["train"]["kimi/kl_loss"][-1] > 0


@pytest.mark.slow
def test_temperature_schedule_reaches_generate_and_the_loss(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, max_steps=3, temperature_func="linear", temperature_begin=0.5,
                   temperature_end=1.5, beta=0.0)
    used, model = [], trainer.model
    generate = model.generate

    def spy(*args, **kwargs):  # records what HF generate receives, then runs it unchanged
        used.append((kwargs["generation_config"].temperature, model.forward.__func__.__closure__))
        return generate(*args, **kwargs)

    model.generate = spy
    trainer.train()
    code = model.forward.__func__.__code__
    temps = [t for t, _ in used]
    heads = [cells[code.co_freevars.index("temperature")].cell_contents for _, cells in used]
    assert temps == pytest.approx([0.5, 0.5 + 1 / 3, 0.5 + 2 / 3])  # linear over the run's 3 optimizer steps
    assert heads[-1] == pytest.approx(temps[-1])  # the loss's log-probs use the same temperature
    logged = [h["temperature"] for h in trainer.state.log_history if "temperature" in h]
    assert logged == pytest.approx(temps)


@pytest.mark.slow
def test_curriculum_order_reaches_the_trainer(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, order_dataset="curriculum")
    indexes = list(trainer._get_train_sampler())
    difficulty = trainer.train_dataset["difficulty"]
    prompts = indexes[:: trainer.num_generations]
    assert [difficulty[i] for i in prompts] == sorted(difficulty[i] for i in prompts)


@pytest.mark.slow
def test_no_mean_for_same_reward_gives_identical_groups_a_signal(qwen_path, counting_dir, tmp_path):
    def constant(completions, **kwargs):
        return [1.0] * len(completions)

    for flag, expected in ((False, 0.0), (True, 1.0)):
        trainer = make(qwen_path, counting_dir, tmp_path, no_mean_for_same_reward=flag, beta=0.0)
        trainer.reward_funcs = [constant]
        trainer.reward_func_names = ["constant"]
        out = batch_of(trainer)
        assert out["advantages"].tolist() == [expected] * 8
