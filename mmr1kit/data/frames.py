"""Decode a row's video into frames: a list of frame images, or a video file sampled at `fps` / up to `max_frames`.

Files are decoded by transformers' `load_video` with the PyAV backend (the library transformers itself uses; the
processors' own loader needs torchcodec, which is not installed with the CPU set). A frame list is read as it is and
`fps` says the rate the frames were taken at (default 1 frame per second), which sets the timestamps Qwen3-VL writes
into the prompt and Qwen2.5-VL's `second_per_grid_ts`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _even(n: int, k: int) -> list[int]:
    """`k` evenly spaced indices of `range(n)` (all of them when `k >= n`), first and last included."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def load_frames(video, fps: float | None = None, max_frames: int | None = None) -> tuple[list[Image.Image], dict]:
    """The frames of a row's `video` and their metadata.

    Args:
        video (`list[str]` or `str`): Frame paths in time order, or a video file.
        fps (`float`, *optional*): For a file, the frames per second to sample (default: every frame); for a frame
            list, the rate the frames were taken at (default 1).
        max_frames (`int`, *optional*): Keep at most this many frames, evenly spaced (first and last kept).

    Returns:
        `(frames, metadata)`: RGB PIL images, and `{"fps", "total_num_frames", "frames_indices", "duration"}` in the
        form `transformers.video_utils.VideoMetadata` takes (indices into the source, at the source's fps).
    """
    if isinstance(video, (list, tuple)):
        keep = _even(len(video), max_frames or len(video))
        frames = []
        for i in keep:
            with Image.open(video[i]) as im:
                frames.append(im.convert("RGB"))
        rate = float(fps) if fps else 1.0
        return frames, {"fps": rate, "total_num_frames": len(video), "frames_indices": keep,
                        "duration": len(video) / rate}
    from transformers.video_utils import default_sample_indices_fn, load_video

    def indices(metadata, **kwargs):
        idx = default_sample_indices_fn(metadata, fps=fps) if fps else np.arange(metadata.total_num_frames)
        return np.asarray(idx)[_even(len(idx), max_frames or len(idx))]

    array, meta = load_video(str(video), backend="pyav", sample_indices_fn=indices)
    frames = [Image.fromarray(np.asarray(f)).convert("RGB") for f in array]
    return frames, {"fps": float(meta.fps), "total_num_frames": int(meta.total_num_frames),
                    "frames_indices": [int(i) for i in meta.frames_indices], "duration": float(meta.duration)}


def key_frames(video, k: int = 4, fps: float | None = None, max_frames: int | None = None) -> list[Image.Image]:
    """At most `k` frames of `video` for a gallery: the first, the last and evenly spaced ones between."""
    frames, _ = load_frames(video, fps=fps, max_frames=max_frames)
    return [frames[i] for i in _even(len(frames), k)]


def write_video(frames: list[Image.Image], path, fps: int = 1) -> str:
    """Encode `frames` as an MPEG-4 file at `fps` frames per second with PyAV; return the path."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)
