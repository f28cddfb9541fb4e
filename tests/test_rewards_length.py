"""`soft_overlong`: TRL's soft overlong punishment in the registry, configured by the run."""

import pytest
from trl.rewards import get_soft_overlong_punishment

from mmr1kit.config import MMR1Config
from mmr1kit.rewards import REWARDS, get_reward_funcs


def test_soft_overlong_is_trls_definition_at_the_runs_lengths():
    config = MMR1Config(reward_funcs=["accuracy", "soft_overlong"], max_completion_length=20, soft_punish_cache=8)
    _, reward = get_reward_funcs(config.reward_funcs, config=config)
    ids = [[1] * n for n in (0, 12, 13, 16, 20, 21)]
    trl = get_soft_overlong_punishment(max_completion_len=20, soft_punish_cache=8)
    assert reward(["x"] * len(ids), completion_ids=ids) == trl(ids) == [0.0, 0.0, -1 / 8, -0.5, -1.0, -1.0]
    assert reward.__name__ == "soft_overlong"  # logged as rewards/soft_overlong/mean
    assert REWARDS["soft_overlong"](["x"], completion_ids=[[1] * 14]) == [-0.5]  # MMR1Config's defaults: 16 and 4
    assert get_reward_funcs(["soft_overlong"])[0] is REWARDS["soft_overlong"]  # without a config: the defaults


def test_soft_overlong_needs_token_ids_and_a_sane_ramp():
    with pytest.raises(ValueError, match="completion_ids"):
        REWARDS["soft_overlong"](["x"])
    with pytest.raises(ValueError, match="^MMR1Config.soft_punish_cache=40"):
        MMR1Config(reward_funcs=["soft_overlong"], max_completion_length=16, soft_punish_cache=40)
