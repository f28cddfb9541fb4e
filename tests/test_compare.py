"""Tests for `mmr1kit.compare`: config differences, one row per run, mean / std / n over seeds, grouped curves."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from mmr1kit import compare

pytest_plugins = ["runs_fixture"]  # tiny_run, tiny_sweep: real tiny run folders

# ---------------------------------------------------------------------------------------------- config differences


@pytest.mark.parametrize(
    "configs, expected",
    [
        # only the fields that differ, sorted by name
        ({"a": {"seed": 0, "kl_approximator": "k1", "beta": 0.04}, "b": {"seed": 1, "kl_approximator": "k3",
                                                                          "beta": 0.04}},
         {"a": "kl_approximator=k1, seed=0", "b": "kl_approximator=k3, seed=1"}),
        # where a run lives is not a difference
        ({"a": {"run_dir": "runs/a", "output_dir": "runs/a/checkpoints", "lr": 1e-05},
          "b": {"run_dir": "runs/b", "output_dir": "runs/b/checkpoints", "lr": 0.0001}},
         {"a": "lr=1e-05", "b": "lr=0.0001"}),
        # a field one config lacks; lists compactly
        ({"a": {"reward_funcs": ["accuracy", "answer_format"]}, "b": {"reward_funcs": ["accuracy"], "x": 1}},
         {"a": 'reward_funcs=["accuracy","answer_format"], x=<missing>', "b": 'reward_funcs=["accuracy"], x=1'}),
        # identical configs, or one: nothing differs
        ({"a": {"seed": 0}, "b": {"seed": 0}}, {"a": "", "b": ""}),
        ({"only": {"seed": 0}}, {"only": ""}),
    ],
)
def test_config_diff(configs, expected):
    assert compare.config_diff(configs) == expected


def test_run_labels_fall_back_to_names():
    assert compare.run_labels({"a": {"seed": 0}, "b": {"seed": 1}}) == {"a": "seed=0", "b": "seed=1"}
    assert compare.run_labels({"a": {"seed": 0}}) == {"a": "a"}
    # a difference that does not tell two runs apart keeps their names in front
    three = {"a": {"seed": 0}, "b": {"seed": 0}, "c": {"seed": 1}}
    assert compare.run_labels(three) == {"a": "a: seed=0", "b": "b: seed=0", "c": "c: seed=1"}


# ---------------------------------------------------------------------------------------------- one row per run


def last_metrics(run_dir, n=1):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: np.mean([r[k] for r in rows[-n:]]) for k in rows[-1] if k != "step"}


@pytest.mark.slow
def test_collect_runs_from_a_sweep(tiny_sweep):
    df = compare.collect_runs(tiny_sweep)
    points = json.loads((tiny_sweep / "sweep.json").read_text())["points"]
    assert df["run"].tolist() == [p["name"] for p in points]  # sweep order
    assert df.attrs["params"] == ["kl_approximator"]
    assert df["kl_approximator"].tolist() == ["k1", "k1", "k3", "k3", "k2", "k2"]
    assert df["seed"].tolist() == [0, 1, 0, 1, 0, 1]
    assert df["status"].tolist() == ["succeeded"] * 4 + ["failed"] * 2
    assert df["steps"].tolist() == [3, 3, 3, 3, 0, 0]
    for _, row in df.iloc[:4].iterrows():
        last = last_metrics(tiny_sweep / row["run"])
        assert row["final/reward"] == pytest.approx(last["reward"])
        assert row["final/kl/k1"] == pytest.approx(last["kl/k1"])
        assert row["train/train_runtime"] > 0
    assert df.iloc[4:]["final/reward"].isna().all()
    assert {"final/reward", "final/kl/k3", "train/train_runtime", "wall_time_s"} <= set(df.attrs["metrics"])
    assert "seed" not in df.attrs["metrics"] and "steps" not in df.attrs["metrics"]

    two = compare.collect_runs(tiny_sweep, last_n=2)
    assert two.loc[0, "final/reward"] == pytest.approx(last_metrics(tiny_sweep / df.loc[0, "run"], n=2)["reward"])


@pytest.mark.slow
def test_collect_runs_from_a_list_finds_the_differences(tiny_sweep, tiny_run):
    paths = [tiny_sweep / "kl_approximator=k1,seed=0", tiny_sweep / "kl_approximator=k3,seed=1", tiny_run]
    df = compare.collect_runs(paths)
    assert df["run"].tolist() == ["kl_approximator=k1,seed=0", "kl_approximator=k3,seed=1", "tiny"]
    # the runs differ in kl_approximator and seed (seed is a column, not a grouping parameter); dataset paths agree
    assert df.attrs["params"] == ["kl_approximator"]
    assert df["kl_approximator"].tolist() == ["k1", "k3", "k3"] and df["seed"].tolist() == [0, 1, 0]
    assert (df["status"] == "succeeded").all()
    assert df.loc[2, "steps"] == 3


@pytest.mark.slow
def test_collect_runs_from_a_folder_of_runs_and_one_run(tiny_sweep, tmp_path):
    for name in ("kl_approximator=k1,seed=0", "kl_approximator=k3,seed=0"):
        (tmp_path / name).symlink_to(tiny_sweep / name, target_is_directory=True)
    (tmp_path / "notes").mkdir()  # not a run
    # a run that never wrote its summary (it crashed, or is still running)
    shutil.copytree(tiny_sweep / "kl_approximator=k3,seed=1", tmp_path / "unfinished",
                    ignore=shutil.ignore_patterns("summary.json"))
    df = compare.collect_runs(tmp_path)
    assert df["run"].tolist() == ["kl_approximator=k1,seed=0", "kl_approximator=k3,seed=0", "unfinished"]
    assert df["status"].tolist() == ["succeeded", "succeeded", "incomplete"]
    assert df.attrs["params"] == ["kl_approximator"] and df["seed"].tolist() == [0, 0, 1]
    table = compare.summarize(df, metrics=["final/reward", "final/kl"])
    assert table.loc["k3", ("runs", "failed")] == 1
    assert table.loc["k3", ("final/reward", "n")] == 1 and table.loc["k3", ("final/kl", "n")] == 1
    assert len(compare.collect_runs(tmp_path / "kl_approximator=k1,seed=0")) == 1


def test_collect_runs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep or run folder"):
        compare.collect_runs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no sweep.json and no run folders"):
        compare.collect_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no run folder at"):
        compare.collect_runs([tmp_path / "a"])
    with pytest.raises(ValueError, match="empty"):
        compare.collect_runs([])
    with pytest.raises(ValueError, match="last_n"):
        compare.collect_runs(tmp_path, last_n=0)


# ---------------------------------------------------------------------------------------------- summaries


def frame(rows, params=("lr",)):
    df = pd.DataFrame(rows)
    df.attrs.update(params=list(params), metrics=["acc"])
    return df


def test_summarize_mean_std_n_and_failures():
    df = frame([
        {"lr": 0.1, "seed": 0, "status": "succeeded", "acc": 0.5},
        {"lr": 0.1, "seed": 1, "status": "succeeded", "acc": 0.7},
        {"lr": 0.1, "seed": 2, "status": "failed", "acc": math.nan},
        {"lr": 0.01, "seed": 0, "status": "succeeded", "acc": 0.2},
    ])
    table = compare.summarize(df)
    assert table.index.tolist() == [0.1, 0.01]  # order of first appearance
    assert table.loc[0.1, ("acc", "mean")] == pytest.approx(0.6)
    assert table.loc[0.1, ("acc", "std")] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table.loc[0.1, ("acc", "n")] == 2 and table.loc[0.1, ("runs", "total")] == 3
    assert table.loc[0.1, ("runs", "failed")] == 1
    assert table.loc[0.01, ("acc", "n")] == 1 and math.isnan(table.loc[0.01, ("acc", "std")])
    whole = compare.summarize(df, by=[])
    assert whole.index.tolist() == ["all"] and whole.loc["all", ("acc", "n")] == 3
    records = compare.summary_records(table)
    assert json.loads(json.dumps(records, allow_nan=False))[1] == {
        "key": {"lr": 0.01}, "runs": {"total": 1, "failed": 0}, "acc": {"mean": 0.2, "std": None, "n": 1}}


def test_summarize_rejects_unknown_columns():
    with pytest.raises(ValueError, match=r"no column\(s\) \['beta'\]"):
        compare.summarize(frame([{"lr": 1, "acc": 1.0}]), by=["beta"])


def test_key_metrics_picks_the_headline_columns():
    df = pd.DataFrame(columns=["final/kl/k3", "final/reward_std", "final/rewards/iou/std", "final/kl", "train/epoch",
                               "final/rewards/iou/mean", "final/reward", "eval/accuracy_after", "final/grad_norm"])
    df.attrs["metrics"] = list(df.columns)
    assert compare.key_metrics(df) == ["eval/accuracy_after", "final/reward", "final/rewards/iou/mean", "final/kl"]


def test_format_summary_reads_mean_std_n():
    df = frame([{"lr": 0.1, "status": "succeeded", "acc": 0.5}, {"lr": 0.1, "status": "succeeded", "acc": 0.7},
                {"lr": 0.01, "status": "succeeded", "acc": 0.25}, {"lr": 0.02, "status": "failed", "acc": math.nan}])
    text = compare.format_summary(compare.summarize(df))
    assert text.to_dict(orient="index") == {
        0.1: {"runs": "2", "acc": "0.6 ± 0.141 (2)"},
        0.01: {"runs": "1", "acc": "0.25 (1)"},
        0.02: {"runs": "1 (1 failed)", "acc": "-"},
    }


@pytest.mark.slow
def test_summarize_and_curves_on_a_real_sweep(tiny_sweep):
    df = compare.collect_runs(tiny_sweep)
    table = compare.summarize(df, metrics=["final/reward"])
    assert table.index.tolist() == ["k1", "k3", "k2"]
    k1 = [last_metrics(tiny_sweep / f"kl_approximator=k1,seed={s}")["reward"] for s in (0, 1)]
    assert table.loc["k1", ("final/reward", "mean")] == pytest.approx(np.mean(k1))
    assert table.loc["k1", ("final/reward", "std")] == pytest.approx(np.std(k1, ddof=1), abs=1e-12)
    assert table.loc["k2", ("final/reward", "n")] == 0 and table.loc["k2", ("runs", "failed")] == 2

    per_run = compare.curves(df)
    assert list(per_run) == df["run"].tolist()[:4]  # failed points have no curves
    grouped = compare.curves(df, by=["kl_approximator"])
    assert list(grouped) == ["kl_approximator=k1 (n=2)", "kl_approximator=k3 (n=2)"]
    runs = [pd.read_json(tiny_sweep / f"kl_approximator=k1,seed={s}" / "metrics.jsonl", lines=True) for s in (0, 1)]
    mean = (runs[0]["reward"].to_numpy() + runs[1]["reward"].to_numpy()) / 2
    assert grouped["kl_approximator=k1 (n=2)"]["reward"].to_numpy() == pytest.approx(mean)
    assert grouped["kl_approximator=k1 (n=2)"]["step"].tolist() == [1, 2, 3]


def test_compare_report_needs_a_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sweep.json"):
        compare.compare_report(tmp_path)
