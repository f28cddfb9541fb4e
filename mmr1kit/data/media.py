"""Several images or a video per row: MMR1's JSON row extended, checked at load time and templated for TRL.

A canonical row (`mmr1kit.data.loading`) carries exactly one of:

- `image`: one path (MMR1's row, unchanged);
- `images`: a list of paths, one or more;
- `video`: a list of frame paths (in time order), or one video file (`.mp4`, `.webm`, ... decoded with PyAV), with
  optional `fps` (frames per second to sample from a file; for a frame list, the rate the frames were taken at,
  default 1) and `max_frames` (keep at most this many, evenly spaced).

The problem text may place the media with placeholders: `<image>` once per image, `<video>` once for the video. A row
whose placeholder count differs from its media is a `DatasetError` naming the row (or a counted `placeholder_mismatch`
skip). Without placeholders the media go before the text, as TRL's `prepare_multimodal_messages` puts them.

Columns (`to_dataset`): `image` stays the first image (decoded lazily) so single-image code keeps working; a dataset
with any `images` row gets an `images` column (a list per row, which TRL 1.16 prefers over `image`) and
`image_paths`; a video dataset has `video` (the row's frame list or file), `video_fps`, `video_max_frames` and no
`image`. Prompts with placeholders are structured messages (`{"type": "image"}` / `{"type": "video"}` parts), stored
with `datasets.Json` because their content mixes strings and part lists.
"""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDERS = {"image": "<image>", "video": "<video>"}
MEDIA_FIELDS = ("image", "images", "video")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
_SPLIT = re.compile("(<image>|<video>)")


def _error(source, row, field, value, message, kind=None):
    from mmr1kit.data.loading import DatasetError

    err = DatasetError(source, row, field, value, message)
    err.kind = kind  # the reason key a skip is counted under (see loading._reason)
    return err


def check_media(row: dict, source: Path, i: int, root: Path, check_image) -> dict:
    """Check a row's `image` / `images` / `video` and its placeholders; return the fields the loader stores.

    Args:
        row (`dict`): The raw row.
        source (`Path`), i (`int`), root (`Path`): Its file, 1-based row number and the folder paths are relative to.
        check_image (`Callable`): `loading._check_image(value, source, row, root) -> (path, width, height)`.

    Returns:
        `dict` with `image` (the first image's path, `None` for a video), `width`, `height`, and `images` (all image
        paths) or `video` (frame paths or the file's path), `video_fps`, `video_max_frames`.
    """
    present = [k for k in MEDIA_FIELDS if row.get(k) is not None]
    if not present:
        raise _error(source, i, "image", None, f"missing field: a row needs 'image', 'images' (a list) or 'video' "
                                                f"(row has {sorted(row)})", kind="missing_field")
    if len(present) > 1:
        raise _error(source, i, present[1], row[present[1]], f"give one of 'image', 'images' or 'video', not "
                                                              f"{' and '.join(present)}", kind="bad_media")
    field = present[0]
    value = row[field]
    if field == "video":
        out = _check_video(row, source, i, root, check_image)
        counts = {"video": 1, "image": 0}
    else:
        values = [value] if field == "image" else value
        if field == "images" and (not isinstance(value, list) or not value):
            raise _error(source, i, "images", value, "expected a non-empty list of image paths", kind="bad_image")
        checked = []
        for k, v in enumerate(values):
            try:
                checked.append(check_image(v, source, i, root))
            except Exception as e:  # name the list position: "images[1]"
                if field == "images" and hasattr(e, "field"):
                    e.field = f"images[{k}]"
                    e.args = (str(e).replace("field 'image'", f"field 'images[{k}]'"),)
                raise
        out = {"image": checked[0][0], "width": checked[0][1], "height": checked[0][2]}
        if field == "images":
            out["images"] = [c[0] for c in checked]
        counts = {"image": len(values), "video": 0}
    _check_placeholders(row.get("problem", ""), counts, source, i)
    return out


def _check_placeholders(problem: str, counts: dict, source, i) -> None:
    for kind, token in PLACEHOLDERS.items():
        found = problem.count(token) if isinstance(problem, str) else 0
        if found and found != counts[kind]:
            raise _error(source, i, "problem", problem, f"has {found} {token} placeholder(s) but the row has "
                                                        f"{counts[kind]} {kind}(s): write one {token} per {kind}, or "
                                                        f"none (the media then go before the text)",
                         kind="placeholder_mismatch")


def _check_video(row, source, i, root, check_image) -> dict:
    value, fps, max_frames = row["video"], row.get("fps"), row.get("max_frames")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise _error(source, i, "fps", fps, "expected a positive number (frames per second)", kind="bad_video")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise _error(source, i, "max_frames", max_frames, "expected an integer >= 1", kind="bad_video")
    common = {"image": None, "video_fps": float(fps) if fps is not None else None, "video_max_frames": max_frames}
    if isinstance(value, list):
        if not value:
            raise _error(source, i, "video", value, "expected frame paths or a video file", kind="bad_video")
        frames = [check_image(v, source, i, root) for v in value]
        return {**common, "video": [f[0] for f in frames], "width": frames[0][1], "height": frames[0][2]}
    if not isinstance(value, str) or Path(value).suffix.lower() not in VIDEO_SUFFIXES:
        raise _error(source, i, "video", value, f"expected a list of frame paths or a video file "
                                                f"({', '.join(VIDEO_SUFFIXES)})", kind="bad_video")
    path = (root / value).resolve() if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise _error(source, i, "video", value, f"video file not found: looked for {path}", kind="missing_image")
    return {**common, "video": str(path), "width": None, "height": None}


def structured_prompt(messages: list[dict], media: dict) -> list[dict]:
    """`messages` with the user turn split into parts at the placeholders (media first when there are none).

    Image parts are `{"type": "image"}` placeholders, filled by TRL's `prepare_multimodal_messages`; the video part
    is `{"type": "video"}`, filled by `mmr1kit.video`.
    """
    out = []
    for message in messages:
        if message["role"] != "user" or not isinstance(message["content"], str):
            out.append(message)
            continue
        text = message["content"]
        if not _SPLIT.search(text):
            n = len(media.get("images") or []) if media.get("video") is None else 0
            lead = "<video>" if media.get("video") is not None else "<image>" * n
            text = lead + text
        parts = []
        for piece in _SPLIT.split(text):
            if piece in ("<image>", "<video>"):
                parts.append({"type": piece[1:-1]})
            elif piece:
                parts.append({"type": "text", "text": piece})
        out.append({**message, "content": parts})
    return out


def to_dataset(data: dict, source):
    """A `datasets.Dataset` from the loader's columns, with the media columns and prompts described above.

    Args:
        data (`dict`): Column name -> list, as `loading.load_dataset` builds it (`prompt`, `problem`, `image`, and
            `images` / `video*` for the rows that have them).
        source (`Path`): The file the rows came from (named in errors).
    """
    import datasets

    n = len(data["prompt"])
    features = {}
    video = data.get("video")
    has_video = video is not None and any(v is not None for v in video)
    if has_video and any(v is None for v in video):
        first = next(k for k, v in enumerate(video) if v is None)
        raise _error(source, None, "id", data["id"][first], "this row has images but other rows have a video: one "
                                                            "dataset holds image rows or video rows, not both")
    images = data.get("images")
    if images is not None:
        data["images"] = [v if v is not None else [p] for v, p in zip(images, data["image"])]
        data["image_paths"] = list(data["images"])
        features["images"] = datasets.Sequence(datasets.Image(mode="RGB"))
    structured = has_video or any(_SPLIT.search(p) for p in data["problem"])
    if structured:
        media = [{"images": (data.get("images") or [None] * n)[k] or [data["image"][k]],
                  "video": video[k] if has_video else None} for k in range(n)]
        data["prompt"] = [structured_prompt(m, x) for m, x in zip(data["prompt"], media)]
        features["prompt"] = datasets.Json()
    if has_video:
        data["video"] = list(video)
        features["video"] = datasets.Json()
        for key in ("image", "width", "height"):
            data.pop(key, None)
    json_columns = [k for k, f in features.items() if isinstance(f, datasets.Json)]
    if json_columns:  # infer the other columns' types, then build with Json from the start (a cast keeps Nones)
        inferred = datasets.Dataset.from_dict({k: v for k, v in data.items() if k not in json_columns}).features
        ds = datasets.Dataset.from_dict(data, features=datasets.Features({**inferred, **features}))
    else:
        ds = datasets.Dataset.from_dict(data)
        for name, feature in features.items():
            ds = ds.cast_column(name, feature)
    if "image" in ds.column_names:
        # mode="RGB": palette, grey, CMYK, 16-bit or alpha images are converted on decode, never crash the processor
        ds = ds.cast_column("image", datasets.Image(mode="RGB"))
    return ds


def row_images(row: dict) -> list:
    """The decoded images of a dataset row, in order: `images`, else `[image]`, else `[]` (a video row)."""
    if row.get("images") is not None:
        return list(row["images"])
    return [row["image"]] if row.get("image") is not None else []


def with_frames(row: dict) -> list[dict]:
    """A video row's prompt with its `{"type": "video"}` part holding the decoded frames and their `metadata`."""
    from mmr1kit.data.frames import load_frames

    frames, metadata = load_frames(row["video"], fps=row.get("video_fps"), max_frames=row.get("video_max_frames"))
    return [{**m, "content": [{**p, "video": frames, "metadata": metadata} if p.get("type") == "video" else p
                              for p in m["content"]]} if isinstance(m["content"], list) else m
            for m in row["prompt"]]


def pop_metadata(prompt: list[dict]) -> list[dict]:
    """Remove the video parts' `metadata` from a prompt (built by `with_frames`) and return them in order."""
    return [p.pop("metadata") for m in prompt if isinstance(m["content"], list) for p in m["content"]
            if p.get("type") == "video" and "metadata" in p]


def conversation(row: dict) -> tuple[list[dict], list[dict]]:
    """A dataset row's prompt as the processor takes it, and its videos' metadata (`[]` without a video).

    Images fill the prompt's placeholders (or go before the text) through TRL's `prepare_multimodal_messages`, as
    `GRPOTrainer` does; a video part gets its frames.
    """
    from trl.data_utils import prepare_multimodal_messages

    if row.get("video") is not None:
        prompt = prepare_multimodal_messages(with_frames(row))
        return prompt, pop_metadata(prompt)
    return prepare_multimodal_messages(row["prompt"], images=row_images(row)), []


def rollout_media(row: dict) -> dict:
    """What a run record's rollout stores to find its row's media again: `image` (the first image's path) plus
    `images` (every path) for a multi-image row, or `video` (frame paths or the file) for a video row."""
    out = {"image": row.get("image_path")}
    if row.get("image_paths") is not None and len(row["image_paths"]) > 1:
        out["images"] = list(row["image_paths"])
    if row.get("video") is not None:
        out["video"] = row["video"]
        out["image"] = None
    return out
