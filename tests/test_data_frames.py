"""Decoding a row's video (mmr1kit.data.frames): frame lists and real MPEG-4 files, fps and max_frames."""

import numpy as np
import pytest
from PIL import Image

from mmr1kit.data.frames import key_frames, load_frames, write_video

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255), (0, 0, 0)]


@pytest.fixture
def frames():
    return [Image.new("RGB", (64, 48), c) for c in COLORS]


def _near(image, color):
    return np.abs(np.asarray(image, dtype=int)[24, 32] - np.array(color)).max() < 40  # lossy codec


def test_frame_list_is_read_in_order_and_thinned_evenly(frames, tmp_path):
    paths = []
    for i, f in enumerate(frames):
        f.save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    out, meta = load_frames(paths)
    assert [f.getpixel((0, 0)) for f in out] == COLORS and meta["fps"] == 1.0 and meta["duration"] == 6.0
    out, meta = load_frames(paths, fps=3, max_frames=3)
    assert meta["frames_indices"] == [0, 2, 5] and [f.getpixel((0, 0)) for f in out] == [COLORS[i] for i in (0, 2, 5)]
    assert meta["fps"] == 3.0 and meta["total_num_frames"] == 6


def test_video_file_is_sampled_at_fps_and_capped_at_max_frames(frames, tmp_path):
    path = write_video(frames, tmp_path / "clip.mp4", fps=2)  # 6 frames at 2 fps: 3 seconds
    out, meta = load_frames(path)
    assert len(out) == 6 and meta["fps"] == pytest.approx(2.0) and out[0].size == (64, 48)
    assert all(_near(f, c) for f, c in zip(out, COLORS))
    out, meta = load_frames(path, fps=1)  # one frame per second: frames 0, 2, 4
    assert meta["frames_indices"] == [0, 2, 4] and all(_near(f, COLORS[i]) for f, i in zip(out, (0, 2, 4)))
    out, meta = load_frames(path, max_frames=2)
    assert meta["frames_indices"] == [0, 5]
    assert [_near(f, c) for f, c in zip(key_frames(path, k=3), (COLORS[0], COLORS[2], COLORS[5]))] == [True] * 3
