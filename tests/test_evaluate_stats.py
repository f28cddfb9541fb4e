"""Uncertainty and paired comparison (`mmr1kit.evaluate_stats`): the exact McNemar test against the binomial sum
written out, the bootstrap intervals' coverage and the test's false-positive rate on simulated data, and, on the
demo's task, a real GRPO gain on the 500 held-out examples found significant while two evaluations of one model are
not.
"""

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmr1kit.evaluate_stats import (
    bootstrap_interval,
    comparison_table,
    mcnemar_exact,
    outcome_table,
    outcomes,
    paired_comparison,
)


def records(label, correct, answered=None, ids=None):
    n = len(correct)
    return pd.DataFrame({"id": ids or [str(i) for i in range(n)], "sample": 0, "label": label,
                         "correct": list(correct), "answered": list(answered) if answered is not None else [True] * n})


def test_mcnemar_exact_is_the_two_sided_binomial_sum():
    for only_a, only_b in [(10, 2), (2, 10), (7, 7), (0, 5), (30, 12), (1, 0)]:
        n, k = only_a + only_b, min(only_a, only_b)
        expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(0, 0) == 1.0


def test_bootstrap_interval_brackets_the_mean_and_handles_degenerate_data():
    x = np.r_[np.ones(30), np.zeros(70)]
    low, high = bootstrap_interval(x)
    assert low < 0.3 < high and 0.1 < high - low < 0.25  # about ±1.96 * sqrt(.3 * .7 / 100) = ±0.09
    assert bootstrap_interval(np.ones(10)) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_interval([]))
    assert bootstrap_interval(x) == bootstrap_interval(x)  # seeded: the same data give the same interval


def test_bootstrap_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [lo <= 0.3 <= hi for lo, hi in (bootstrap_interval(rng.random(150) < 0.3, n_resamples=1000)
                                           for _ in range(200))]
    assert 0.89 <= np.mean(hits) <= 0.99


def test_mcnemar_false_positive_rate_under_the_null_is_at_most_alpha():
    rng = random.Random(0)
    rejected = 0
    for _ in range(400):  # two models with the same accuracy, answers correlated through example difficulty
        easy = [rng.random() < 0.6 for _ in range(200)]
        a = [e if rng.random() < 0.8 else rng.random() < 0.5 for e in easy]
        b = [e if rng.random() < 0.8 else rng.random() < 0.5 for e in easy]
        only_a, only_b = sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))
        rejected += mcnemar_exact(only_a, only_b) < 0.05
    assert rejected / 400 <= 0.06  # the exact test is conservative: at most alpha, up to sampling noise


def test_paired_comparison_counts_discordant_pairs_and_intervals_the_difference():
    a = [True] * 40 + [False] * 60
    b = [True] * 40 + [True] * 25 + [False] * 35  # b also right on 25 that a got wrong, never the reverse
    result = paired_comparison(pd.concat([records("before", a), records("after", b)]), "before", "after")
    assert (result.n, result.only_a, result.only_b) == (100, 0, 25)
    assert result.difference == pytest.approx(0.25) and result.low <= 0.25 <= result.high and result.low > 0
    assert result.p_value == pytest.approx(2 * 0.5**25) and result.significant()
    assert "+25.0 points" in str(result)


def test_paired_comparison_of_identical_answers_is_zero_and_not_significant():
    a = [True, False] * 50
    result = paired_comparison(pd.concat([records("x", a), records("y", a)]), "x", "y")
    assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not result.significant()


def test_paired_comparison_pairs_by_id_and_names_missing_labels():
    a = records("a", [True, False, True], ids=["1", "2", "3"])
    b = records("b", [True, True], ids=["3", "2"])  # other order, one example fewer
    result = paired_comparison(pd.concat([a, b]), "a", "b")
    assert (result.n, result.only_b, result.only_a) == (2, 1, 0)
    with pytest.raises(ValueError, match=r"no records with label = 'c'; found \['a', 'b'\]"):
        paired_comparison(pd.concat([a, b]), "a", "c")
    with pytest.raises(ValueError, match="share no example id"):
        paired_comparison(pd.concat([a, records("b", [True], ids=["9"])]), "a", "b")


def test_outcome_table_separates_no_answer_from_wrong():
    df = pd.concat([records("m", [True, False, False, False], answered=[True, True, False, False]),
                    records("n", [True, True, True, False])])
    assert outcomes(df).tolist()[:4] == ["correct", "wrong", "no_answer", "no_answer"]
    table = outcome_table(df)
    assert table.loc["m", ["correct", "wrong", "no_answer"]].tolist() == [1, 1, 2]
    assert table.loc["m", "accuracy"] == 0.25 and table.loc["m", "no_answer_rate"] == 0.5
    assert table.loc["m", "no_answer_rate_low"] <= 0.5 <= table.loc["m", "no_answer_rate_high"]
    assert table.loc["n", "wrong"] == 1 and table.loc["n", "no_answer"] == 0
    with pytest.raises(ValueError, match="no column"):
        outcome_table(df, by="prompt")


def test_comparison_table_compares_everything_with_the_baseline():
    df = pd.concat([records("base", [False] * 20), records("ckpt", [True] * 5 + [False] * 15),
                    records("final", [True] * 15 + [False] * 5)])
    table = comparison_table(df)
    assert table["b"].tolist() == ["ckpt", "final"] and set(table["a"]) == {"base"}
    assert table["significant"].tolist() == [False, True]  # 5 discordant pairs: p = 0.0625; 15: p < 1e-4


# ---------------------------------------------------------------------------------------------- the demo's task


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """The demo pipeline at its smallest: a biased warm start (100 SFT steps) then 20 GRPO steps, on the first 1,000
    training rows of the synthetic counting card; the 500 held-out rows of its test split. About 50 s of CPU."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import undercount_labels, write_dataset
    from mmr1kit.models import tiny_vlm
    from mmr1kit.trainer import MMR1Trainer
    from mmr1kit.warmstart import warm_start

    root = tmp_path_factory.mktemp("demo")
    write_dataset("counting", root / "data", n=1000, seed=0, split="train")  # the card's train split, first rows
    train = load_dataset(root / "data", "train")
    test = load_dataset(Path(__file__).resolve().parent.parent / "data_cards" / "synthetic_counting.md", "test")
    labels = undercount_labels(train.remove_columns("image"), threshold=3, p=0.8, seed=0)
    warm = warm_start(tiny_vlm(), train, root / "warm", labels=labels, max_steps=100, batch_size=32, seed=0)
    config = MMR1Config.from_dict({
        "run_dir": str(root / "grpo"), "dataset": str(root / "data"), "model_name_or_path": str(warm),
        "max_steps": 20, "learning_rate": 2e-4, "per_device_train_batch_size": 64, "num_generations": 8,
        "max_completion_length": 12, "loss_type": "dapo", "beta": 0.0, "seed": 0, "save_strategy": "no",
        "reward_funcs": ["accuracy", "answer_format"], "reward_weights": [1.0, 0.1], "lr_scheduler_type": "cosine"})
    trainer = MMR1Trainer(model=str(warm), args=config, train_dataset=train)
    trainer.train()
    trainer.save_model(str(root / "final"))
    return {"warm start": str(warm), "after GRPO": str(root / "final")}, test


@pytest.mark.slow
def test_grpo_gain_is_significant_and_a_repeat_evaluation_is_not(demo_models):
    from mmr1kit.evaluate import evaluate_models

    models, test = demo_models
    assert len(test) == 500
    greedy, table = evaluate_models({**models, "after GRPO, again": models["after GRPO"]}, test, "counting",
                                    max_new_tokens=12)
    gain = paired_comparison(greedy, "warm start", "after GRPO")
    assert gain.n == 500 and gain.significant(0.001) and gain.low > 0, str(gain)
    assert gain.difference == pytest.approx(table.loc["after GRPO", "accuracy"] - table.loc["warm start", "accuracy"])
    for label in models:
        assert table.loc[label, "accuracy_low"] <= table.loc[label, "accuracy"] <= table.loc[label, "accuracy_high"]
    repeat = paired_comparison(greedy, "after GRPO", "after GRPO, again")  # greedy: the very same answers
    assert (repeat.difference, repeat.only_a, repeat.only_b, repeat.p_value) == (0.0, 0, 0, 1.0)
    sampled = pd.concat([evaluate_models({f"sampled, seed {s}": models["after GRPO"]}, test, "counting",
                                         max_new_tokens=12, seed=s, protocol="training_sampled")[0]
                         for s in (1, 2)])
    noise = paired_comparison(sampled, "sampled, seed 1", "sampled, seed 2")
    assert noise.only_a + noise.only_b > 0 and not noise.significant(), str(noise)
    assert noise.low <= 0 <= noise.high
