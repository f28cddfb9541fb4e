"""Galleries draw every image of a multi-image row and a video's key frames (mmr1kit.plots.media)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmr1kit.plots import rollout_gallery
from mmr1kit.plots.media import GAP, row_picture
from mmr1kit.widgets import group_view, view_html

COLORS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (0, 0, 0)]


@pytest.fixture
def paths(tmp_path):
    out = []
    for i, color in enumerate(COLORS):
        Image.new("RGB", (40, 30), color).save(tmp_path / f"{i}.png")
        out.append(str(tmp_path / f"{i}.png"))
    return out


def _rollouts(**media):
    return pd.DataFrame([{"step": 1, "group": 0, "prompt_id": "p", "problem": "How many?", "solution": "[1, 1, 5, 5]",
                          "completion": f"<answer>{k}</answer>", "reward": k / 4, "advantage": 0.0, **media}
                         for k in range(4)])


def test_several_images_are_joined_side_by_side(paths):
    picture, count, problem = row_picture({"images": paths[:3], "image": paths[0]})
    assert count == 3 and problem is None and picture.size == (3 * 40 + 2 * GAP, 30)
    pixels = np.asarray(picture)
    assert [tuple(pixels[15, x]) for x in (5, 40 + GAP + 5, 80 + 2 * GAP + 5)] == COLORS[:3]
    assert row_picture({"image": paths[0], "images": float("nan")})[0].size == (40, 30)  # one image: as before


def test_a_video_shows_its_key_frames(paths, tmp_path):
    frames = [paths[0]] * 3 + [paths[2]] * 3 + [paths[3]] * 2  # 8 frames: red, then blue, then black
    picture, count, _ = row_picture({"video": frames, "image": None}, key_frames=4)
    assert count == 4 and picture.width == 4 * 40 + 3 * GAP
    first, last = np.asarray(picture)[15, 5], np.asarray(picture)[15, picture.width - 5]
    assert tuple(first) == COLORS[0] and tuple(last) == COLORS[3]


def test_the_gallery_and_the_browser_draw_every_image(paths):
    fig = rollout_gallery(_rollouts(images=paths[:2], image=paths[0]), ncols=4)
    drawn = [ax.get_images()[0].get_array().shape[:2] for ax in fig.axes if ax.get_images()]
    assert drawn == [(30, 80 + GAP)] * 4 and all(not ax.patches for ax in fig.axes)  # no box across two images
    for media in ({"images": paths[:2], "image": paths[0]}, {"video": paths, "image": None}):
        view = group_view(_rollouts(**media), 1, 0)
        assert view_html(view, dpi=20).count('class="mmr1-figure"') == 1
