"""The rollout gallery: rollout images titled with their completions, with rewards and GT / predicted boxes."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mmr1kit.plots.figure import _fmt_group, _grid, _is_number, _not_logged
from mmr1kit.plots.media import row_picture

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _box(value) -> list[float] | None:
    """A box `[x1, y1, x2, y2]` from a list/array, or from text with `parse_box` (inside `<answer>` first)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        from mmr1kit.rewards.parsing import parse_box  # here: mmr1kit.rewards imports sympy (seconds)

        answer = _ANSWER.search(value)
        for text in ([answer.group(1)] if answer else []) + [value]:
            found = parse_box(text)
            if found is not None:
                return list(found.box)
        return None
    try:
        box = [float(v) for v in np.asarray(value, dtype=float).ravel()]
    except (TypeError, ValueError):
        return None
    return box[:4] if len(box) >= 4 and all(math.isfinite(v) for v in box[:4]) else None


def _load_image(value, image_root):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB"), None
    if isinstance(value, Mapping):  # Hugging Face datasets Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            import io

            return Image.open(io.BytesIO(value["bytes"])).convert("RGB"), None
        value = value.get("path")
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return None, "no image"
    path = Path(str(value))
    if image_root is not None and not path.is_absolute():
        path = Path(image_root) / path
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), None
    except (OSError, ValueError) as err:
        return None, f"cannot open {path.name}: {type(err).__name__}"


def printable(text: str) -> str:
    """`text` with control characters other than newline and tab written as `\\xNN` (a random policy emits them)."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in str(text))


def _shorten(text: str, max_chars: int) -> str:
    """Cut the middle out of `text` so that the answer at its end stays visible."""
    if len(text) <= max_chars:
        return text
    tail = min(max(max_chars // 3, 1), 48)
    return text[: max(max_chars - tail - 1, 0)] + "…" + text[-tail:]


def _answer_text(value, max_chars: int = 28) -> str | None:
    """The answer in `value`: inside `<answer>...</answer>` when tagged, else the whole text; whitespace collapsed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = printable(value)
    found = _ANSWER.search(text)
    return _shorten(" ".join((found.group(1) if found else text).split()), max_chars)


def _truth_line(row: pd.Series) -> str | None:
    """`truth X · answer Y` for a row with a `solution`: the answer from `answer`, else from the completion."""
    truth = _answer_text(row.get("solution")) if "solution" in row.index else None
    if truth is None:
        return None
    if "answer" in row.index and _answer_text(row["answer"]) is not None:
        answer = _answer_text(row["answer"])
    else:
        completion = str(row.get("completion", "") or "")
        answer = _answer_text(completion) if _ANSWER.search(completion) else "(no <answer>)"
    return f"truth {truth} · answer {answer}"


def _fmt_value(v, signed=False) -> str:
    if _is_number(v) and not isinstance(v, str):
        return f"{float(v):+.2f}" if signed else f"{float(v):.2f}"
    return str(v)


def rollout_gallery(
    rows,
    *,
    image_root=None,
    ncols: int = 4,
    max_items: int = 8,
    reward_cols=None,
    draw_boxes: bool = True,
    box_format: str = "pixels",
    wrap: int = 30,
    max_chars: int = 150,
) -> Figure:
    """A grid of rollout images, each titled with its completion and labelled with its rewards and advantage.

    The title is the completion with whitespace collapsed, cut to `max_chars` characters by removing its middle
    (so the final answer stays visible) and wrapped to `wrap` characters, in monospace (no mathtext, so `$` is shown
    as is). Below each image: the ground truth next to the prediction (`truth 3 · answer 2`, from `solution` and from
    `answer` or the completion's `<answer>` tags; rows without `solution` skip it), then `step`, `prompt_id` and
    `group` when present, the rewards, `advantage`, and `length` / `truncated`. Boxes: a `gt_box` and a `pred_box`
    column (lists `[x1, y1, x2, y2]`) are used when present; otherwise the ground truth is parsed from `solution`
    and the prediction from `completion` (inside `<answer>...</answer>` first) with the rewards' box parser
    (`mmr1kit.rewards.parsing.parse_box`: MMR1's `[a,b,c,d]`, `(a,b,c,d)`, `(a,b),(c,d)`, and Qwen box tokens / JSON). GT is drawn green, the prediction red; a row with neither has no rectangles.

    Args:
        rows (`pd.DataFrame`, list of dicts or `pd.Series`):
            Rollouts: `image` (path, PIL image, or `{"bytes", "path"}`), or `images` (a multi-image row's paths:
            all shown side by side) or `video` (frame paths or a file: key frames side by side; see
            `mmr1kit.plots.media`), `completion`, `reward`, `advantage`, `rewards/<func>`, optionally `step`,
            `prompt_id`, `group`, `solution`, `answer`, `length`, `truncated`, `gt_box`, `pred_box`.
        image_root (`str` or `Path`, *optional*):
            Folder that relative `image` paths are relative to (default: the working directory). An image that
            cannot be opened leaves a panel that says why.
        ncols (`int`, defaults to `4`), max_items (`int`, defaults to `8`):
            Grid width and the number of rows shown (the first `max_items`).
        reward_cols (`Sequence[str]`, *optional*):
            Columns to print under each image; default `reward` and every `rewards/*` column. `advantage` is
            always added when present.
        draw_boxes (`bool`, defaults to `True`):
            Draw GT / predicted boxes.
        box_format (`str`, defaults to `"pixels"`):
            Coordinates of the boxes: `"pixels"`, `"0-1000"` (Qwen2-VL style) or `"0-1"`; scaled to the image.

    Returns:
        `Figure` with one axes per shown rollout; boxes are `Rectangle` patches (`ax.patches`).
    """
    if box_format not in ("pixels", "0-1000", "0-1"):
        raise ValueError(f"rollout_gallery: box_format must be 'pixels', '0-1000' or '0-1', got {box_format!r}")
    if isinstance(rows, pd.Series):
        rows = rows.to_frame().T
    elif not isinstance(rows, pd.DataFrame):
        rows = pd.DataFrame(list(rows))
    rows = rows.head(max(int(max_items), 0))
    if reward_cols is None:
        reward_cols = [
            c for c in ["reward", *sorted(map(str, rows.columns))] if c == "reward" or c.startswith("rewards/")
        ]
    reward_cols = [c for c in dict.fromkeys(reward_cols) if c in rows.columns]
    if "advantage" in rows.columns and "advantage" not in reward_cols:
        reward_cols.append("advantage")
    fig, axes = _grid(len(rows), ncols, panel=(3.2, 4.4))
    if rows.empty:
        _not_logged(axes[0], "no rollouts")
        return fig
    for ax, (_, row) in zip(axes, rows.iterrows()):
        image, count, problem = row_picture(row, image_root)  # several images / key frames: side by side
        if image is not None:
            ax.imshow(np.asarray(image))
        else:
            ax.text(
                0.5,
                0.5,
                problem,
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="0.5",
                fontsize=8,
                wrap=True,
                parse_math=False,
            )
        ax.set_xticks([])
        ax.set_yticks([])
        completion = _shorten(" ".join(printable(row.get("completion", "") or "").split()), max_chars)
        title = textwrap.fill(completion, width=wrap, break_on_hyphens=False) if completion else "(empty completion)"
        ax.set_title(title, fontsize=7, fontfamily="monospace", loc="left", parse_math=False)
        head = [
            f"{k} {_fmt_group(row[k])}" for k in ("step", "prompt_id", "group") if k in row.index and pd.notna(row[k])
        ]
        vals = [f"{c.removeprefix('rewards/')}={_fmt_value(row[c], signed=c == 'advantage')}" for c in reward_cols]
        if "length" in row.index and pd.notna(row["length"]):
            vals.append(f"len={_fmt_group(row['length'])}")
        if "truncated" in row.index and pd.notna(row["truncated"]) and bool(row["truncated"]):
            vals.append("TRUNCATED")
        truth = _truth_line(row)
        lines = textwrap.wrap(truth, width=wrap + 6) if truth else []
        lines += [" · ".join(head)] if head else []
        lines += textwrap.wrap("  ".join(vals), width=wrap + 6)
        ax.set_xlabel("\n".join(lines), fontsize=7, fontfamily="monospace", parse_math=False)
        if draw_boxes and count == 1:
            _draw_boxes(ax, row, image, box_format)
    return fig


def _draw_boxes(ax, row: pd.Series, image, box_format: str) -> None:
    gt = _box(row["gt_box"]) if "gt_box" in row.index else _box(row.get("solution"))
    pred = _box(row["pred_box"]) if "pred_box" in row.index else _box(row.get("completion"))
    if gt is None and pred is None:
        return
    w, h = image.size if image is not None else (1.0, 1.0)
    scale = {"pixels": (1.0, 1.0), "0-1000": (w / 1000, h / 1000), "0-1": (w, h)}[box_format]
    for box, color, name in ((gt, "limegreen", "gt"), (pred, "red", "pred")):
        if box is None:
            continue
        x1, y1, x2, y2 = box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=2, label=name))
    if image is not None:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    else:
        ax.autoscale_view()
        if not ax.yaxis_inverted():
            ax.invert_yaxis()
