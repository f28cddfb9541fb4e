"""Tests for `mmr1kit.widgets`: the pure group selection on hand-written rollouts, then the real widget on a real run."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmr1kit import widgets
from mmr1kit.runs import load_run

pytest_plugins = ["runs_fixture"]  # tiny_run, tiny_sweep: real tiny run folders

# Two steps, two groups each, G = 3. Total reward = accuracy + format.
#   (1, 0): accuracy 0 0 0, format 1 1 1  -> a failure, zero variance (all 1.0)
#   (1, 1): accuracy 1 0 0, format 1 0 1  -> mean 1.0, varied
#   (2, 0): accuracy 0 0 0, format 0 1 0  -> a failure, mean 1/3
#   (2, 1): accuracy 1 1 1, format 1 1 1  -> zero variance (all 2.0)
ACC = {(1, 0): [0, 0, 0], (1, 1): [1, 0, 0], (2, 0): [0, 0, 0], (2, 1): [1, 1, 1]}
FMT = {(1, 0): [1, 1, 1], (1, 1): [1, 0, 1], (2, 0): [0, 1, 0], (2, 1): [1, 1, 1]}


def make_rollouts(image=None):
    rows = []
    for (step, group), accs in ACC.items():
        for i, acc in enumerate(accs):
            fmt = FMT[step, group][i]
            rows.append({"step": step, "prompt_id": f"p{step}{group}", "group": group, "image": image,
                         "problem": "Box the red circle.", "solution": "[10, 10, 30, 30]",
                         "completion": f"<answer>[{10 + i}, 10, 30, 30]</answer>" if acc else "no idea",
                         "rewards/accuracy": float(acc), "rewards/format": float(fmt), "reward": float(acc + fmt),
                         "advantage": 0.0, "length": 5 + i, "truncated": i == 2})
    return pd.DataFrame(rows)


def keys(table):
    return [(int(s), int(g)) for s, g in table[["step", "group"]].itertuples(index=False)]


# ---------------------------------------------------------------------------------------------- pure selection


def test_group_table_statistics():
    table = widgets.group_table(make_rollouts())
    assert keys(table) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    row = table.iloc[1]  # (1, 1): totals 2, 0, 1
    assert (row["n"], row["mean"], row["min"], row["max"]) == (3, 1.0, 0.0, 2.0)
    assert row["std"] == pytest.approx(np.std([2, 0, 1]))
    assert row["rewards/accuracy"] == pytest.approx(1 / 3) and row["rewards/format"] == pytest.approx(2 / 3)
    assert table["zero_variance"].tolist() == [True, False, False, True]
    assert table["truncated"].tolist() == [1, 1, 1, 1]
    # The statistics follow the chosen reward.
    assert widgets.group_table(make_rollouts(), reward="accuracy")["mean"].tolist() == pytest.approx([0, 1 / 3, 0, 1])


@pytest.mark.parametrize(
    "kind, kwargs, expected",
    [
        ("all", {}, [(1, 0), (1, 1), (2, 0), (2, 1)]),
        # default: the first reward function (accuracy), nothing above 0
        ("failures", {}, [(1, 0), (2, 0)]),
        # on format, nothing above 0.5: none (every group has a format-1 completion)
        ("failures", {"reward": "format", "threshold": 0.5}, []),
        # on the total, no completion above 1.0: (1, 0) (all 1.0) and (2, 0) (max 1.0)
        ("failures", {"reward": "reward", "threshold": 1.0}, [(1, 0), (2, 0)]),
        ("zero_variance", {}, [(1, 0), (2, 1)]),
        # zero variance on accuracy alone: the all-wrong groups too
        ("zero_variance", {"reward": "rewards/accuracy"}, [(1, 0), (2, 0), (2, 1)]),
        ("below", {"threshold": 1.0}, [(2, 0)]),
        ("below", {"threshold": 1.5}, [(1, 0), (1, 1), (2, 0)]),
        ("below", {"threshold": 0.5, "reward": "accuracy"}, [(1, 0), (1, 1), (2, 0)]),
        ("all", {"step": 2}, [(2, 0), (2, 1)]),
        ("zero_variance", {"step": 2}, [(2, 1)]),
    ],
)
def test_filter_groups(kind, kwargs, expected):
    assert keys(widgets.filter_groups(make_rollouts(), kind, **kwargs)) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "bad"}, "kind='bad' is not a filter; valid: all, failures, zero_variance, below"),
        ({"kind": "below"}, "needs a threshold"),
        ({"kind": "all", "reward": "iou"}, "reward='iou' is not logged in these rollouts; valid: reward, accuracy, format"),
    ],
)
def test_filter_groups_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        widgets.filter_groups(make_rollouts(), **kwargs)


def test_filter_groups_names_missing_columns():
    with pytest.raises(ValueError, match=r"rollouts have no column\(s\) \['group'\]"):
        widgets.group_table(make_rollouts().drop(columns="group"))


def test_worst_groups_order_and_ties():
    # total means: (1,0) 1.0, (1,1) 1.0, (2,0) 1/3, (2,1) 2.0; ties go to the later step, then the lower group
    assert keys(widgets.worst_groups(make_rollouts(), n=10)) == [(2, 0), (1, 0), (1, 1), (2, 1)]
    assert keys(widgets.worst_groups(make_rollouts(), n=1, kind="zero_variance")) == [(1, 0)]
    assert keys(widgets.worst_groups(make_rollouts(), n=0)) == []


def test_step_overview_counts():
    overview = widgets.step_overview(make_rollouts(), threshold=1.5)
    assert overview.loc[1].tolist() == [2, 1.0, 1, 1, 2]  # groups, mean reward, failures, zero variance, below
    assert overview.loc[2].tolist() == pytest.approx([2, (1 / 3 + 2) / 2, 1, 1, 1])


# ---------------------------------------------------------------------------------------------- one group


def test_group_view_parses_boxes_and_keeps_every_completion():
    view = widgets.group_view(make_rollouts(), 1, 1)
    assert (view["step"], view["group"], view["prompt_id"]) == (1, 1, "p11")
    assert view["gt_boxes"] == [(10.0, 10.0, 30.0, 30.0)]
    comp = view["completions"]
    assert len(comp) == 3 and comp["reward"].tolist() == [2.0, 0.0, 1.0]
    assert comp["pred_boxes"].tolist() == [[(10.0, 10.0, 30.0, 30.0)], [], []]
    assert comp["answer"].tolist()[0] == "[10, 10, 30, 30]"
    assert view["mean"] == pytest.approx(1.0) and not view["zero_variance"]
    assert view["reward_columns"] == ["rewards/accuracy", "rewards/format"]


def test_group_view_reads_qwen2vl_box_tokens():
    rollouts = make_rollouts()
    rollouts.loc[0, "completion"] = "<|box_start|>(100,200),(300,400)<|box_end|>"
    view = widgets.group_view(rollouts, 1, 0, box_convention="relative")
    assert view["completions"]["pred_boxes"][0] == [(100.0, 200.0, 300.0, 400.0)]


def test_group_view_missing_group_says_what_exists():
    with pytest.raises(KeyError, match=r"groups at step 1: \[0, 1\]"):
        widgets.group_view(make_rollouts(), 1, 7)
    with pytest.raises(KeyError, match=r"logged steps: \[1, 2\]"):
        widgets.group_view(make_rollouts(), 9, 0)


def test_view_html_escapes_and_shows_every_value():
    rollouts = make_rollouts()
    rollouts.loc[3, "completion"] = "<script>alert(1)</script>\x18"
    page = widgets.view_html(widgets.group_view(rollouts, 1, 1), figure=False)
    assert "<script>" not in page and "&lt;script&gt;" in page and "\\x18" in page and "\x18" not in page
    assert page.count("<td ") == 3 * 9  # 3 completions x (index, text, box, 2 rewards, total, advantage, len, trunc)
    assert "step 1 · group 1" in page and "zero variance" not in page
    assert "zero variance" in widgets.view_html(widgets.group_view(rollouts, 1, 0), figure=False)


def test_figure_draws_gt_green_and_prediction_red(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (64, 64), "white").save(path)
    view = widgets.group_view(make_rollouts(image=str(path)), 1, 1)
    pixels = np.asarray(Image.open(io.BytesIO(widgets.figure_png(view))).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red = (r > 180) & (g < 90) & (b < 90)
    green = (g > 150) & (r < 120) & (b < 120)
    assert green.sum() > 50  # the GT box on each of the 3 panels
    assert red.sum() > 20  # the one predicted box (completion #0)
    # Without a prediction there is nothing red.
    pixels = np.asarray(Image.open(io.BytesIO(widgets.figure_png(widgets.group_view(
        make_rollouts(image=str(path)), 1, 0)))).convert("RGB")).astype(int)
    assert not ((pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)).any()


def test_figure_without_image_is_none_and_html_says_so():
    view = widgets.group_view(make_rollouts(image="/nonexistent.png"), 1, 1)
    assert widgets.figure_png(view) is None
    assert "image not available" in widgets.view_html(view)


# ---------------------------------------------------------------------------------------------- real run, real widget


def raw_rollouts(run_dir):
    return [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_group_table_matches_the_rollouts_file(tiny_run):
    raw = raw_rollouts(tiny_run)
    totals = {}
    for row in raw:
        totals.setdefault((row["step"], row["group"]), []).append(row["reward"])
    table = widgets.group_table(load_run(tiny_run).rollouts)
    assert keys(table) == sorted(totals)
    assert table["mean"].tolist() == pytest.approx([np.mean(totals[k]) for k in sorted(totals)])
    flat = [k for k in sorted(totals) if max(totals[k]) - min(totals[k]) <= 1e-6]
    assert keys(widgets.filter_groups(load_run(tiny_run).rollouts, "zero_variance")) == flat
    assert 0 < len(flat) < len(totals)  # the fixture has both kinds


@pytest.mark.slow
def test_browser_rerenders_on_every_control(tiny_run):
    rollouts = load_run(tiny_run).rollouts
    browser = widgets.RolloutBrowser(rollouts)
    assert browser.steps == [1, 2, 3] and browser.step.value == 1
    assert "step 1 · group 0" in browser.view.value and "data:image/png;base64," in browser.view.value
    assert [v for _, v in browser.group.options] == [0, 1]

    browser.step.value = 2
    assert "step 2 · group 0" in browser.view.value and browser.status.value.startswith("step 2:")
    browser.group.value = 1
    assert "step 2 · group 1" in browser.view.value
    prompt = rollouts[(rollouts.step == 2) & (rollouts.group == 1)].prompt_id.iloc[0]
    assert f"prompt {prompt}" in browser.view.value

    browser.kind.value = "zero_variance"
    expected = keys(widgets.filter_groups(rollouts, "zero_variance", step=2))
    assert [(2, v) for _, v in browser.group.options] == expected
    assert "(zero variance)" in browser.status.value

    browser.kind.value = "below"
    browser.threshold.value = -1.0  # nothing is below
    assert browser.group.options == () and "no group at step 2 matches" in browser.view.value

    browser.reward.value = "iou"
    browser.threshold.value = 0.5  # every group: iou is 0 for a random policy
    assert len(browser.group.options) == 2


@pytest.mark.slow
def test_browser_walks_the_worst_groups(tiny_run):
    rollouts = load_run(tiny_run).rollouts
    browser = widgets.RolloutBrowser(rollouts, figure=False)
    worst = keys(widgets.worst_groups(rollouts, n=3))
    seen = []
    for _ in range(3):
        browser.worst.click()
        seen.append((browser.step.value, browser.group.value))
        assert f"step {seen[-1][0]} · group {seen[-1][1]}" in browser.view.value
    assert seen == worst
    assert "worst #3 of 6" in browser.status.value


@pytest.mark.slow
def test_browser_displays_as_widget_with_a_static_fallback(tiny_run):
    browser = widgets.RolloutBrowser(load_run(tiny_run), figure=False)
    data, _ = browser._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == browser.widget.model_id
    assert "step 1 · group 0" in data["text/html"]


def test_browser_rejects_empty_rollouts():
    with pytest.raises(ValueError, match="no rollouts to browse"):
        widgets.RolloutBrowser(make_rollouts().iloc[:0])


def test_printable_keeps_text_and_marks_control_characters():
    assert widgets.printable("a\tb\nc\x00\x1b") == "a\tb\nc\\x00\\x1b"
