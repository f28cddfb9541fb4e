"""The MMR1 objective inside the trainer: each option changes the loss, and its gradient, as its formula says.

Every test builds a real MMR1Trainer on the tiny Qwen2.5-VL and a real generation batch, then recomputes the loss by
hand from the same tensors (`objective_helpers`: a fresh forward pass and the formula, never `_compute_loss`).
"""

import copy

import pytest
import torch
from objective_helpers import (
    BASE,
    batch_of,
    expected_policy_loss,
    grads_of,
    length_reward,
    loss_and_grads,
    make,
    move_policy,
    policy_logits,
    seq_mean_then_batch_mean,
    token_logps,
)
from trl import GRPOConfig, GRPOTrainer

from mmr1kit import kl
from mmr1kit.config import LOSS_TYPES
from mmr1kit.trainer import MMR1Trainer


class LogpProbe(MMR1Trainer):
    """Keeps the gradient that reaches the loss's own per-token log-probs `(B, T)` (the policy pass, with entropies)."""

    def _get_per_token_logps_and_entropies(self, *args, compute_entropy=False, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, compute_entropy=compute_entropy, **kwargs)
        if compute_entropy and out[0].requires_grad:
            out[0].retain_grad()
            self.probe = out[0]
        return out


@pytest.fixture(scope="module")
def probe(qwen_path, counting_dir, tmp_path_factory):
    """A policy moved away from its reference, one generation batch, and advantages set to 0: only the KL is left."""
    trainer = make(qwen_path, counting_dir, tmp_path_factory.mktemp("probe"), cls=LogpProbe, beta=0.5)
    move_policy(trainer)
    inputs = batch_of(trainer)
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    return trainer, inputs


# The gradient of the KL term with respect to each log-prob, as a multiple of grad logp (d = ref - logp).
COEFFICIENTS = {
    ("k1", False): lambda logp, ref: torch.ones_like(logp),
    ("k2", False): lambda logp, ref: logp - ref,
    ("k3", False): lambda logp, ref: 1 - torch.exp(ref - logp),  # MMR1's k3
    ("k3", True): lambda logp, ref: logp - ref,  # TRL's use_bias_correction_kl: k2's gradient
}


@pytest.mark.slow
@pytest.mark.parametrize("kind, bias_correction", list(COEFFICIENTS), ids=lambda v: str(v))
def test_kl_gradient_coefficient_through_the_trainer(kind, bias_correction, probe):
    trainer, inputs = probe
    trainer.args.kl_approximator, trainer.args.use_bias_correction_kl = kind, bias_correction
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, inputs).backward()
    logp, ref, mask = trainer.probe.detach(), inputs["ref_per_token_logps"], inputs["completion_mask"].bool()
    # loss = mean_i (sum_t beta * KL_it m_it / n_i)  =>  dloss/dlogp_it = beta * c_it * m_it / (n_i * B)
    n, B = inputs["completion_mask"].sum(1, keepdim=True), logp.size(0)
    measured = trainer.probe.grad * n * B / trainer.beta
    expected = COEFFICIENTS[kind, bias_correction](logp, ref)
    torch.testing.assert_close(measured[mask], expected[mask], rtol=1e-4, atol=1e-6)
    assert (logp - ref)[mask].abs().max() > 0.3  # the policy has moved: k2's and k3's coefficients differ
    assert (measured[~mask] == 0).all()


@pytest.mark.slow
def test_k2_and_k3_runs_differ_once_the_policy_has_moved(qwen_path, counting_dir, tmp_path):
    def grad_norms(kind, bias_correction):
        trainer = make(qwen_path, counting_dir, tmp_path / f"{kind}{bias_correction}", max_steps=3, beta=1.0,
                       learning_rate=1e-2, warmup_steps=0, kl_approximator=kind, use_bias_correction_kl=bias_correction)
        trainer.train()
        return [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]

    k2, k3, k3_corrected = grad_norms("k2", False), grad_norms("k3", False), grad_norms("k3", True)
    assert k3[0] == pytest.approx(k2[0], rel=1e-5)  # step 1: policy == reference, both KL gradients are 0
    assert all(abs(a - b) > 1e-3 * b for a, b in zip(k3[1:], k2[1:]))  # MMR1's k3 is not k2
    assert k3_corrected == pytest.approx(k2, rel=1e-4)  # TRL's bias correction turns k3's gradient into k2's


@pytest.mark.slow
@pytest.mark.parametrize("bias_correction", [False, True])
def test_neutral_settings_reproduce_trl_exactly(bias_correction, qwen_path, counting_dir, tmp_path):
    # TRL's image path too (each image encoded per completion): bit for bit. With encode_images_once on, the loss and
    # gradients equal this path to float rounding (tests/test_vision_cache.py).
    ours = make(qwen_path, counting_dir, tmp_path, beta=0.04, loss_type="grpo", use_bias_correction_kl=bias_correction,
                encode_images_once=False)
    move_policy(ours)  # so that the KL term, and the flag, matter
    inputs = batch_of(ours)
    trl_args = GRPOConfig(output_dir=str(tmp_path / "trl"), beta=0.04, loss_type="grpo",
                          use_bias_correction_kl=bias_correction, **BASE)
    theirs = GRPOTrainer(model=str(qwen_path), reward_funcs=[length_reward], args=trl_args,
                         train_dataset=ours.train_dataset, processing_class=ours.processing_class)
    theirs.current_gradient_accumulation_steps = 1
    theirs.model.load_state_dict(ours.model.state_dict())
    loss_a, grads_a = loss_and_grads(ours, inputs)
    loss_b, grads_b = loss_and_grads(theirs, copy.copy(inputs))
    assert loss_a == loss_b
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)


@pytest.fixture(scope="module")
def moved(qwen_path, counting_dir, tmp_path_factory):
    """A trainer whose policy differs from its reference, one batch with non-zero advantages."""
    trainer = make(qwen_path, counting_dir, tmp_path_factory.mktemp("moved"), beta=0.5, exact_kl_every=0)
    move_policy(trainer)
    inputs = batch_of(trainer)
    assert inputs["advantages"].abs().sum() > 0
    return trainer, inputs


def configure(trainer, **values):
    for name, value in {"use_kl": True, "kl_approximator": "k3", "entropy_reg": False, **values}.items():
        setattr(trainer.args, name, value)


def check_against(trainer, inputs, expected_fn):
    """`_compute_loss`'s value and every parameter gradient against `expected_fn(logits)` and its autograd."""
    loss, grads = loss_and_grads(trainer, inputs)
    trainer.model.zero_grad()
    expected = expected_fn(policy_logits(trainer, inputs))
    expected.backward()
    hand = grads_of(trainer.model)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert grads.keys() == hand.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], hand[name], rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "exact"])
def test_use_kl_false_trains_like_beta_zero(kind, moved):
    trainer, inputs = moved
    configure(trainer, use_kl=False, kl_approximator=kind)
    check_against(trainer, inputs, lambda logits: expected_policy_loss(token_logps(logits, inputs), inputs))


def direct_kl(kind, logits, ref_logits, inputs):
    """Per-token KL `(B, T)` of the sampled tokens (k1, k2) or of the full softmax (exact), from the formulas."""
    if kind == "exact":
        p, q = logits.log_softmax(-1), ref_logits.log_softmax(-1)
        return (p.exp() * (p - q)).sum(-1)
    logp, ref = token_logps(logits, inputs), inputs["ref_per_token_logps"]
    return logp - ref if kind == "k1" else 0.5 * (logp - ref) ** 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["k1", "k2", "exact"])
def test_estimator_term_value_and_gradient_without_trls_k3(kind, moved):
    """loss = GRPO term + beta * masked mean of the chosen KL, nothing else: TRL's own k3 term is absent."""
    trainer, inputs = moved
    configure(trainer, kl_approximator=kind)
    with torch.no_grad():
        ref_logits = policy_logits(trainer, inputs, model=trainer.ref_model)
    mask = inputs["completion_mask"]

    def expected(logits):
        kl_term = seq_mean_then_batch_mean(direct_kl(kind, logits, ref_logits, inputs), mask)
        return expected_policy_loss(token_logps(logits, inputs), inputs) + trainer.beta * kl_term

    check_against(trainer, inputs, expected)
    if kind == "exact":
        logged = trainer._metrics["train"]["kl/exact"][-1]
        with torch.no_grad():
            direct = direct_kl("exact", policy_logits(trainer, inputs), ref_logits, inputs)
        assert logged == pytest.approx(((direct * mask).sum() / mask.sum()).item(), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("weight", [0.1, -0.1])
def test_entropy_term_value_and_gradient(weight, moved):
    trainer, inputs = moved
    configure(trainer, use_kl=False, entropy_reg=True, entropy_weight=weight)

    def expected(logits):
        logp_v = logits.log_softmax(-1)
        entropy = -(logp_v.exp() * logp_v).sum(-1)  # (B, T), full vocabulary
        term = seq_mean_then_batch_mean(-entropy, inputs["completion_mask"])  # MMR1: + w * (-H)
        return expected_policy_loss(token_logps(logits, inputs), inputs) + weight * term

    check_against(trainer, inputs, expected)
    configure(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aggregate_reduces_like_trl_for_every_loss_type(loss_type, probe):
    """With zero advantages TRL's loss is exactly its reduction of `beta * k3`: `_aggregate` must give the same."""
    trainer, inputs = probe
    inputs = dict(inputs)
    mask = inputs["completion_mask"].clone()
    for i in range(mask.size(0)):  # sequences of different lengths, so that the reductions differ
        mask[i, max(1, mask.size(1) - i) :] = 0
    inputs["completion_mask"] = mask
    trainer.loss_type, trainer.args.use_bias_correction_kl = loss_type, False
    trainer.current_gradient_accumulation_steps = 2
    try:
        theirs = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)  # TRL 1.16's own code
        logp = trainer._policy_pass[0]
        ours = trainer._aggregate(trainer.beta * kl.estimate("k3", logp, inputs["ref_per_token_logps"]), mask, inputs)
    finally:
        trainer.loss_type, trainer.current_gradient_accumulation_steps = "grpo", 1
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert ours.item() > 0


def test_loss_types_are_the_ones_trl_reduces():
    """`LOSS_TYPES` (checked by `MMR1Config`, each covered above) is exactly the set of loss names TRL 1.16 compares `loss_type` with."""
    import inspect
    import re

    source = inspect.getsource(GRPOTrainer._compute_loss)
    compared = re.findall(r'self\.loss_type (?:==|!=|in) (\[[^\]]*\]|"[^"]*")', source)
    named = {name for group in compared for name in re.findall(r'"([a-z_]+)"', group)}
    assert named == set(LOSS_TYPES)


@pytest.mark.slow
def test_kimi_loss_gradient_matches_the_hand_derived_one(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, beta=0.2, kl_approximator="fullkimi", scale_rewards="none",
                   num_iterations=2)
    inputs = batch_of(trainer)
    assert inputs["old_per_token_logps"] is not None  # num_iterations > 1: the round's sampling policy is kept
    move_policy(trainer, scale=0.02)  # the policy moved within the round: the KL term bites
    _, grads = loss_and_grads(trainer, inputs)
    # By hand: d loss / d logp_{i,t} = (tau * logratio_i - A_i) * m_{i,t} / B, then the chain rule through logp.
    trainer.model.zero_grad()
    logps = token_logps(policy_logits(trainer, inputs), inputs)
    m = inputs["completion_mask"]
    logratio = ((logps.detach() - inputs["old_per_token_logps"]) * m).sum(1)
    weight = (0.2 * logratio - inputs["advantages"]).unsqueeze(1) * m / m.size(0)
    (logps * weight).sum().backward()
    hand = grads_of(trainer.model)
    for name in grads:
        torch.testing.assert_close(grads[name], hand[name], rtol=1e-4, atol=1e-6)
    assert trainer._metrics["train"]["kimi/kl_loss"][-1] > 0


@pytest.mark.slow
def test_temperature_schedule_reaches_generate_and_the_loss(qwen_path, counting_dir, tmp_path):
    trainer = make(qwen_path, counting_dir, tmp_path, max_steps=3, temperature_func="linear", temperature_begin=0.7,
                   temperature_end=1.2, beta=0.0)
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
    assert temps == pytest.approx([0.7, 0.95, 1.2])  # temperature_begin at the first step, temperature_end at the last
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
