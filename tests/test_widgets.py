"""Tests for `mmr1kit.widgets`: one group's view on hand-written rollouts, then the real widget on a real run."""

import io

import numpy as np
import pytest
from PIL import Image
from rollouts_data import keys, make_rollouts

from mmr1kit import widgets
from mmr1kit.runs import load_run

pytest_plugins = ["runs_fixture"]  # tiny_run, tiny_sweep: real tiny run folders

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
