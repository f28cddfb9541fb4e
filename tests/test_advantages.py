"""Group advantages (TRL's and MMR1's), MMR1's reward_std, the KL in the reward, and the hook that applies them
inside the trainer."""

import math
from pathlib import Path

import pytest
import torch
from objective_helpers import batch_of, make

from mmr1kit import advantages
from mmr1kit.advantages import group_advantages, sequence_kl_penalty, within_group_std
from mmr1kit.config import MMR1Config

ROOT = Path(__file__).resolve().parent.parent
# G = 4. group 0: mixed ; group 1: all 1 ; group 2: all 0 ; group 3: all -0.5 ; group 4: one large outlier
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0] + [1.0] * 4 + [0.0] * 4 + [-0.5] * 4 + [3.0, 0.0, 0.0, 0.0])
# group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
Z0 = 0.5 / (math.sqrt(1 / 3) + 1e-4)
# group 4: mean 0.75, unbiased std sqrt((2.25^2 + 3 * 0.75^2) / 3) = sqrt(2.25) = 1.5
Z4_HI, Z4_LO = 2.25 / 1.5001, -0.75 / 1.5001


def test_group_advantages_default_zscore():
    expected = [Z0, -Z0, -Z0, Z0] + [0.0] * 12 + [Z4_HI, Z4_LO, Z4_LO, Z4_LO]
    torch.testing.assert_close(group_advantages(REWARDS, 4), torch.tensor(expected))


def test_group_advantages_no_mean_for_same_reward():
    # identical groups are not centred: clamp(r / 1e-4, -1, 1) -> +1, 0, -1 ; the outlier's 1.4999 is clamped to 1
    expected = [Z0, -Z0, -Z0, Z0] + [1.0] * 4 + [0.0] * 4 + [-1.0] * 4 + [1.0, Z4_LO, Z4_LO, Z4_LO]
    out = group_advantages(REWARDS, 4, no_mean_for_same_reward=True)
    torch.testing.assert_close(out, torch.tensor(expected))


def test_group_advantages_no_mean_detects_float_identical_groups():
    # three copies of 0.1 in float32: the float mean need not equal 0.1 exactly; the mask must still apply
    out = group_advantages(torch.full((3,), 0.1), 3, no_mean_for_same_reward=True)
    torch.testing.assert_close(out, torch.ones(3))


def test_group_advantages_mean_only():
    # Kimi / fullkimi: r - group mean
    expected = [0.5, -0.5, -0.5, 0.5] + [0.0] * 12 + [2.25, -0.75, -0.75, -0.75]
    torch.testing.assert_close(group_advantages(REWARDS, 4, scale="none"), torch.tensor(expected))


def test_group_advantages_batch_scale():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 0.0, 0.0, 0.0])
    # batch mean 5/8 ; sum of squared deviations 2 * 0.375^2 + 5 * 0.625^2 + 2.375^2 = 7.875 ; / 7 = 1.125
    std = math.sqrt(1.125) + 1e-4
    expected = [0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std, 2.25 / std, -0.75 / std, -0.75 / std, -0.75 / std]
    torch.testing.assert_close(group_advantages(rewards, 4, scale="batch"), torch.tensor(expected))


def test_no_mean_for_same_reward_composes_with_scale_rewards():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # a mixed group (mean 0.5), an identical one
    centred = torch.tensor([0.5, -0.5, -0.5, 0.5, 2.0, 2.0, 2.0, 2.0])  # the identical group is not centred
    none = group_advantages(rewards, 4, scale="none", no_mean_for_same_reward=True)
    torch.testing.assert_close(none, centred.clamp(-1, 1))
    batch = group_advantages(rewards, 4, scale="batch", no_mean_for_same_reward=True)
    torch.testing.assert_close(batch, (centred / (rewards.std() + 1e-4)).clamp(-1, 1))


def test_unscorable_rewards_are_left_out_and_get_zero_as_in_trl():
    nan = float("nan")
    rewards = torch.tensor([1.0, 0.0, nan, 1.0, nan, nan, nan, nan, 2.0, 2.0, nan, 2.0])
    # group 0: scorable (1, 0, 1), mean 2/3, std sqrt(1/3) ; group 1: nothing scorable ; group 2: identical 2.0
    z = 1 / 3 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4),
                               torch.tensor([z, -2 * z, 0.0, z] + [0.0] * 4 + [0.0] * 4))
    torch.testing.assert_close(group_advantages(rewards, 4, no_mean_for_same_reward=True),
                               torch.tensor([z, -1.0, 0.0, z] + [0.0] * 4 + [1.0, 1.0, 0.0, 1.0]))


def test_group_of_one_has_zero_std_as_in_trl():
    rewards = torch.tensor([0.5, -2.0, 0.0])  # an evaluation round with num_generations_eval=1
    torch.testing.assert_close(group_advantages(rewards, 1), torch.zeros(3))
    torch.testing.assert_close(group_advantages(rewards, 1, no_mean_for_same_reward=True), torch.tensor([1.0, -1, 0]))


@pytest.mark.parametrize(
    "rewards, g, scale, match",
    [
        (torch.zeros(4), 3, "group", "divide"),
        (torch.zeros(4), 0, "group", ">= 1"),
        (torch.zeros(4), 2, "global", "group, batch, none"),
        (torch.zeros(2, 2), 2, "group", "1-D"),
        (torch.tensor([0.0, float("inf")]), 2, "group", "infinite"),
    ],
)
def test_group_advantages_errors(rewards, g, scale, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, g, scale=scale)


def test_within_group_std_is_the_mean_of_group_stds():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, float("nan"), 3.0, float("nan"), float("nan")])
    # group 0: std sqrt(1/3) ; group 1: 0 ; group 2: a single scorable reward, not counted
    assert within_group_std(rewards, 4) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert math.isnan(within_group_std(rewards, 1))


@pytest.mark.parametrize(
    "values, field",
    [
        ({"no_mean_for_same_reward": True, "multi_objective_aggregation": "normalize_then_sum"},
         "multi_objective_aggregation"),
        ({"scale_rewards": "global"}, "scale_rewards"),
        ({"multi_objective_aggregation": "sum"}, "multi_objective_aggregation"),
        ({"kl_approximator": "kimifull", "scale_rewards": "group"}, "scale_rewards"),
    ],
)
def test_combinations_that_cannot_be_honoured_fail_at_config_time(values, field):
    with pytest.raises(ValueError, match=f"MMR1Config.{field}=.*expected|MMR1Config.{field}=.*needs|{field}='none'"):
        MMR1Config(**values)


def test_kimifull_with_no_mean_follows_mmr1():
    config = MMR1Config(kl_approximator="fullkimi", no_mean_for_same_reward=True, scale_rewards="group")
    assert advantages.config_error(config) is None  # MMR1: no_mean_for_same_reward takes precedence over fullkimi


# --- inside the trainer ----------------------------------------------------------------------------------------------


def parity_reward(completions, count, **kwargs):
    """Flat within prompts with an even count (identical groups), graded by length on odd counts; the first
    completion of each odd-count group is unscorable (None)."""
    out = []
    for i, (c, n) in enumerate(zip(completions, count)):
        if n % 2 == 0:
            out.append(float(n % 3) - 1.0)
        else:
            out.append(None if i % 4 == 0 else len(c[0]["content"]) / 10.0)
    return out


def rows_for(trainer, G, n_prompts=2):
    """`n_prompts` prompts, alternately with an even count (a flat reward of +-1) and an odd count, each `G` times."""
    counts = trainer.train_dataset["count"]
    even = [i for i, n in enumerate(counts) if n % 2 == 0 and n % 3 != 1]  # a flat, non-zero reward
    odd = [i for i, n in enumerate(counts) if n % 2 == 1]
    picks = [(even if k % 2 == 0 else odd)[k // 2] for k in range(n_prompts)]
    return [trainer.train_dataset[i] for i in picks for _ in range(G)]


def round_rewards(trainer, n):
    """The weighted summed reward of the round's last `n` completions, as logged by TRL (NaN: unscorable)."""
    per_func = torch.tensor([list(trainer._logs["rewards"][name])[-n:] for name in trainer.reward_func_names]).T
    return advantages.summed_rewards(per_func, trainer.reward_weights)


@pytest.fixture(scope="module")
def trainers(qwen_path, counting_dir, tmp_path_factory):
    """One trainer per (scale_rewards, no_mean_for_same_reward); every one with num_generations_eval=2."""
    root = tmp_path_factory.mktemp("advantages")
    return {(scale, flag): make(qwen_path, counting_dir, root / f"{scale}{flag}", reward_funcs=[parity_reward],
                                beta=0.0, scale_rewards=scale, no_mean_for_same_reward=flag, num_generations_eval=2)
            for scale in ("group", "batch", "none") for flag in (False, True)}


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("no_mean", [False, True])
def test_trainer_advantages_compose_with_scale_rewards(scale, no_mean, trainers):
    trainer = trainers[scale, no_mean]
    out = batch_of(trainer, rows_for(trainer, 4))
    rewards = round_rewards(trainer, 8)
    assert rewards.isnan().any() and (rewards[:4] == rewards[0]).all()  # an unscorable row, an identical group
    expected = group_advantages(rewards, 4, scale=scale, no_mean_for_same_reward=no_mean)
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-5, atol=1e-6)  # no_mean off: this is TRL's own
    assert list(trainer._logs["advantages"])[-8:] == pytest.approx(expected.tolist(), abs=1e-6)  # what TRL logs
    assert (out["advantages"][:4] != 0).all() == no_mean  # identical group: a signal only with no_mean
    spread = trainer._metrics["train"]["reward_std/within_group"][-1]
    assert spread == pytest.approx(within_group_std(rewards, 4))
    assert spread != pytest.approx(trainer._metrics["train"]["reward_std"][-1])  # not TRL's batch std


@pytest.mark.slow
def test_evaluation_rounds_use_their_own_group_size_and_rows(trainers):
    trainer = trainers["group", True]
    batch_of(trainer, rows_for(trainer, 4))  # a training round fills TRL's _logs first
    out = batch_of(trainer, rows_for(trainer, 2, n_prompts=4), training=False)  # G_eval = 2
    rewards = round_rewards(trainer, 8)
    expected = group_advantages(rewards, 2, no_mean_for_same_reward=True)
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-5, atol=1e-6)
    assert trainer._metrics["eval"]["reward_std/within_group"][-1] == pytest.approx(within_group_std(rewards, 2))
    trainer.model.train()


@pytest.mark.slow
def test_reward_std_within_group_reaches_the_run_record(qwen_path, counting_dir, tmp_path):
    import json

    from objective_helpers import BASE

    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    config = MMR1Config.from_dict({**BASE, "max_steps": 1, "beta": 0.0, "run_dir": str(tmp_path / "run")})
    dataset = load_dataset(counting_dir, "train", config)
    MMR1Trainer(model=str(qwen_path), reward_funcs=[parity_reward], args=config, train_dataset=dataset).train()
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    rewards = torch.tensor([r["rewards/parity_reward"] for r in rollouts])  # NaN: unscorable
    assert row["reward_std/within_group"] == pytest.approx(within_group_std(rewards, 4), rel=1e-5)
    docs = (ROOT / "docs" / "metrics.md").read_text()
    assert "| `reward_std/within_group` | mmr1kit | MMR1's `reward_std`: the mean over the step's groups" in docs


# --- KL in the reward ------------------------------------------------------------------------------------------------


def test_sequence_kl_penalty_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])  # the third token is padding
    k1 = logp - ref  # [[0.5, -1, 0], [0.2, 0, -8]]
    assert sequence_kl_penalty(k1, mask, beta=0.1).tolist() == pytest.approx([0.1 * (0.5 - 1.0), 0.1 * 0.2])
    k2 = 0.5 * (logp - ref) ** 2
    assert sequence_kl_penalty(k2, mask, beta=0.1).tolist() == pytest.approx([0.1 * (0.125 + 0.5), 0.1 * 0.02])


@pytest.mark.parametrize(
    "values, field",
    [
        ({"kl_in_reward": "k4"}, "kl_in_reward"),
        ({"kl_in_reward": "k1", "beta": 0.0}, "beta"),
        ({"kl_in_reward": "k3", "multi_objective_aggregation": "normalize_then_sum"}, "multi_objective_aggregation"),
    ],
)
def test_kl_in_reward_settings_that_cannot_work(values, field):
    with pytest.raises(ValueError, match=f"^MMR1Config.{field}="):
        MMR1Config(**values)
    assert MMR1Config(kl_in_reward="none").kl_in_reward is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["k1", "k3", "exact"])
def test_kl_in_the_reward_matches_a_hand_computation(kind, qwen_path, counting_dir, tmp_path):
    """Advantages of `r - beta * sum_t KL_t`, with the policy's and the reference's log-probs from plain forwards."""
    from objective_helpers import length_reward, move_policy, policy_logits, token_logps

    trainer = make(qwen_path, counting_dir, tmp_path / "run", kl_in_reward=kind, beta=0.5, use_kl=False)
    move_policy(trainer)  # the policy differs from the reference
    out = batch_of(trainer)
    with torch.no_grad():
        logits, ref_logits = policy_logits(trainer, out), policy_logits(trainer, out, trainer.ref_model)
    mask = out["completion_mask"].float()
    if kind == "exact":
        per_token = (logits.softmax(-1) * (logits.log_softmax(-1) - ref_logits.log_softmax(-1))).sum(-1)
    else:
        d = token_logps(ref_logits, out) - token_logps(logits, out)
        per_token = -d if kind == "k1" else d.exp() - d - 1
    penalty = 0.5 * (per_token * mask).sum(1)
    rewards = torch.tensor(length_reward(list(trainer._logs["completion"])))  # the round's 8 completions
    expected = group_advantages(rewards - penalty, 4)
    assert penalty.abs().min() > 1e-3  # the policy moved: the KL is not negligible ...
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-4, atol=1e-4)  # ... and shapes the advantages
    assert not torch.allclose(group_advantages(rewards, 4), expected, atol=1e-2)
    assert trainer._metrics["train"]["kl_penalty"][-1] == pytest.approx(penalty.mean().item(), rel=1e-4)
