"""Rollout browser: pick a step and a prompt group, see the image with its boxes and the G completions side by side.

The logic is pure functions over the `rollouts` data frame of a run (`mmr1kit.runs.load_run(path).rollouts`, one
row per completion: `step`, `group`, `prompt_id`, `image`, `problem`, `solution`, `completion`, `rewards/<func>`,
`reward`, `advantage`, `length`, `truncated`), so they are tested without a browser and reused by the static gallery
that headless (papermill) runs put into the report:

- the groups to look at: `group_table`, `filter_groups` (its `kind`s), `worst_groups`, `step_overview`, from
  `mmr1kit.rollout_groups` and importable from here too;
- [`group_view`]: everything one group shows (boxes parsed with `mmr1kit.rewards.parsing`), as data;
- [`view_html`] / [`gallery_html`]: that view as self-contained HTML (the image is an embedded PNG drawn by
  `mmr1kit.plots.rollout_gallery`, GT box green, predicted box red).

[`RolloutBrowser`] is a thin `ipywidgets` layer: a step slider, a group dropdown, filter toggles, a reward
dropdown, a threshold box and a "next worst" button; every change re-renders `browser.view` (an `HTML` widget).
"""

from __future__ import annotations

import base64
import html
import math

import numpy as np
import pandas as pd

from mmr1kit.plots.rollouts import printable
from mmr1kit.rollout_groups import (
    FLAT,
    GROUP_KEYS,
    KIND_LABELS,
    KINDS,
    check_rollouts,
    filter_groups,
    group_table,
    reward_columns,
    step_overview,
    worst_groups,
)

__all__ = [
    "KINDS",
    "RolloutBrowser",
    "figure_png",
    "filter_groups",
    "gallery_html",
    "group_table",
    "group_view",
    "printable",
    "reward_columns",
    "step_overview",
    "view_html",
    "worst_groups",
]



# ----------------------------------------------------------------------------------------------- one group


def _boxes(text, convention: str) -> list[tuple[float, ...]]:
    from mmr1kit.rewards.parsing import completion_text, extract_answer, parse_boxes

    if not isinstance(text, (str, list, dict)):
        return []
    return [b.box for b in parse_boxes(extract_answer(completion_text(text)), convention)]


def group_view(rollouts: pd.DataFrame, step: int, group: int, *, box_convention: str = "pixel") -> dict:
    """Everything one group shows, as data.

    Args:
        rollouts (`pd.DataFrame`): one row per completion.
        step (`int`), group (`int`): the group's key.
        box_convention (`str`, defaults to `"pixel"`): how boxes are written in `solution` and in the completions
            (`"pixel"`, `"qwen2vl_1000"`, `"relative"`; see `mmr1kit.rewards.parsing`).

    Returns:
        `dict` with `step, group, prompt_id, problem, solution, image, images, video` (the media: see
        `mmr1kit.plots.media`), `gt_boxes` (boxes parsed from the solution),
        `reward_columns` (the `rewards/<func>` columns), `mean` / `std` of the total reward, `zero_variance`, and
        `completions`: a `pd.DataFrame`, one row per completion in logged order, with `completion, answer,
        pred_boxes, rewards/<func>..., reward, advantage, length, truncated` (those logged).

    Raises:
        `KeyError`: no such group (the message lists the groups of that step, or the logged steps).
    """
    from mmr1kit.rewards.parsing import check_convention, completion_text, extract_answer

    check_convention(box_convention)
    check_rollouts(rollouts)
    rows = rollouts[(rollouts["step"] == step) & (rollouts["group"] == group)]
    if rows.empty:
        at_step = sorted(rollouts.loc[rollouts["step"] == step, "group"].unique().tolist())
        where = (f"groups at step {step}: {at_step}" if at_step
                 else f"logged steps: {sorted(rollouts['step'].unique().tolist())}")
        raise KeyError(f"no rollouts for step {step}, group {group}; {where}")
    first = rows.iloc[0]
    funcs = reward_columns(rollouts)
    cols = [c for c in [*funcs, "reward", "advantage", "length", "truncated"] if c in rows.columns]
    texts = [completion_text(c) if not isinstance(c, str) else c for c in rows["completion"]]
    completions = pd.DataFrame({"completion": texts, "answer": [extract_answer(t) for t in texts],
                                "pred_boxes": [_boxes(t, box_convention) for t in texts]})
    completions = pd.concat([completions, rows[cols].reset_index(drop=True)], axis=1)
    total = pd.to_numeric(rows["reward"], errors="coerce").to_numpy(dtype=float)
    return {
        "step": int(step),
        "group": int(group),
        "prompt_id": first.get("prompt_id"),
        "problem": first.get("problem"),
        "solution": first.get("solution"),
        "image": first.get("image"),
        "images": first.get("images"),  # a multi-image row's paths (NaN / None otherwise)
        "video": first.get("video"),  # a video row's frames or file
        "box_convention": box_convention,
        "gt_boxes": _boxes(first.get("solution"), box_convention),
        "reward_columns": funcs,
        "mean": float(np.nanmean(total)) if np.isfinite(total).any() else math.nan,
        "std": float(np.nanstd(total)) if np.isfinite(total).any() else math.nan,
        "zero_variance": bool(np.nanmax(total) - np.nanmin(total) <= FLAT) if np.isfinite(total).any() else True,
        "completions": completions,
    }


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _esc(value) -> str:
    return html.escape(printable("" if value is None or (isinstance(value, float) and math.isnan(value)) else value))


def _num(value, signed: bool = False) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return "nan" if math.isnan(v) else (f"{v:+.3f}" if signed else f"{v:.3f}")


def figure_png(view: dict, *, image_root=None, dpi: int = 72, ncols: int = 4) -> bytes | None:
    """The group's image once per completion, GT box green and predicted box red (via `plots.rollout_gallery`).

    Boxes are converted to pixels with the image size (`mmr1kit.rewards.parsing.to_pixels`); only the first GT box
    and the first predicted box of each completion are drawn. Returns PNG bytes, or `None` without an image.
    """
    from mmr1kit.plots import rollout_gallery
    from mmr1kit.plots.figure import png_bytes
    from mmr1kit.plots.media import row_picture
    from mmr1kit.rewards.parsing import to_pixels

    image, _, _ = row_picture(view, image_root)  # a multi-image row / a video: every image / key frames
    if image is None:
        return None
    w, h = image.size

    def pixels(boxes):
        return list(to_pixels(boxes[0], view["box_convention"], w, h)) if boxes else None

    comp = view["completions"]
    media = {k: [view[k]] * len(comp) for k in ("image", "images", "video") if view.get(k) is not None}
    rows = pd.DataFrame({**media, "completion": comp["completion"],
                         "gt_box": [pixels(view["gt_boxes"])] * len(comp),
                         "pred_box": [pixels(b) for b in comp["pred_boxes"]]})
    rows["completion"] = [f"#{i}: {printable(t)}" for i, t in enumerate(comp["completion"])]
    fig = rollout_gallery(rows, image_root=image_root, ncols=min(ncols, max(len(rows), 1)), max_items=len(rows),
                          reward_cols=[], max_chars=60)
    return png_bytes(fig, dpi)  # a random policy writes characters no installed font has: no warning per glyph


def view_html(view: dict, *, image_root=None, figure: bool = True, dpi: int = 72) -> str:
    """A group view as self-contained HTML: a header, the prompt and solution, the image panels, and a table with
    one column per completion (text, each reward, total, advantage, length, truncated)."""
    comp = view["completions"]
    flat = " · <b>zero variance</b> (advantage 0)" if view["zero_variance"] else ""
    gt = f" · GT box {_esc(list(view['gt_boxes'][0]))}" if view["gt_boxes"] else ""
    parts = [
        f'<div class="mmr1-group" data-step="{view["step"]}" data-group="{view["group"]}">',
        (f'<div class="mmr1-header"><b>step {view["step"]} · group {view["group"]}</b> · prompt '
         f'{_esc(view["prompt_id"])} · {len(comp)} completions · reward {_num(view["mean"])} '
         f'± {_num(view["std"])}{flat}</div>'),
        (f'<div><b>problem:</b> {_esc(view["problem"])}<br><b>solution:</b> '
         f'<code>{_esc(view["solution"])}</code>{gt}</div>'),
    ]
    png = figure_png(view, image_root=image_root, dpi=dpi) if figure else None
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img class="mmr1-figure" src="data:image/png;base64,{data}" style="max-width:100%">')
    elif figure:
        media = next(view[k] for k in ("video", "images", "image") if _present(view.get(k)) or k == "image")
        parts.append(f"<div><i>image not available: {_esc(media)}</i></div>")
    style = 'style="border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left"'

    def cells(values):
        return "".join(f"<td {style}>{v}</td>" for v in values)

    rows = [("", [f"<b>#{i}</b>" for i in range(len(comp))]),
            ("completion", [f'<pre style="white-space:pre-wrap;margin:0;max-width:28em">{_esc(t)}</pre>'
                            for t in comp["completion"]]),
            ("predicted box", [_esc([round(v, 1) for v in b[0]]) if b else "-" for b in comp["pred_boxes"]])]
    for col in view["reward_columns"]:
        rows.append((col.removeprefix("rewards/"), [_num(v) for v in comp[col]]))
    for col, signed in (("reward", False), ("advantage", True)):
        if col in comp.columns:
            rows.append((f"<b>{col}</b>", [_num(v, signed) for v in comp[col]]))
    if "length" in comp.columns:
        rows.append(("length", [_esc(v) for v in comp["length"]]))
    if "truncated" in comp.columns:
        rows.append(("truncated", ["<b>yes</b>" if bool(v) else "no" for v in comp["truncated"]]))
    table = "".join(f"<tr><th {style}>{name}</th>{cells(values)}</tr>" for name, values in rows)
    parts.append(f'<table class="mmr1-completions" style="border-collapse:collapse;font-size:12px">{table}</table>')
    parts.append("</div>")
    return "\n".join(parts)


def gallery_html(rollouts: pd.DataFrame, groups: pd.DataFrame, *, title: str | None = None, image_root=None,
                 box_convention: str = "pixel", dpi: int = 72) -> str:
    """The views of several groups (rows with `step` and `group`, e.g. from [`worst_groups`]) as one HTML block."""
    parts = [f"<h3>{_esc(title)}</h3>"] if title else []
    if groups.empty:
        parts.append("<p><i>no group matches</i></p>")
    for step, group in groups[GROUP_KEYS].itertuples(index=False):
        view = group_view(rollouts, int(step), int(group), box_convention=box_convention)
        parts.append(view_html(view, image_root=image_root, dpi=dpi) + "<hr>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- the widget


class RolloutBrowser:
    """An `ipywidgets` browser over a run's rollouts; display it as the last expression of a cell.

    Widgets (public, so tests and users can drive them): `step` (`IntSlider`), `group` (`Dropdown` of the groups
    at that step that pass the filter), `kind` (`ToggleButtons`: all / failures / zero variance / below threshold),
    `reward` (`Dropdown`: the filter's default, the total, or one function), `threshold` (`FloatText`),
    `worst` (`Button`: jump to the next-worst group matching the filter), `status` and `view` (`HTML`).

    Args:
        rollouts (`pd.DataFrame` or `mmr1kit.runs.Run`): one row per completion.
        image_root (`str` or `Path`, *optional*): folder that relative image paths are relative to.
        box_convention (`str`, defaults to `"pixel"`): as in [`group_view`].
        threshold (`float`, defaults to `0.5`): initial value of the threshold box, which both the `failures` filter
            (no completion above it) and the `below` filter (mean below it) use.
        figure (`bool`, defaults to `True`): draw the image panels (False: tables only, faster).

    In a live kernel the widgets render; where there is none (a papermill report rendered to HTML) the display
    falls back to the HTML of the current view.
    """

    def __init__(self, rollouts, *, image_root=None, box_convention: str = "pixel", threshold: float = 0.5,
                 figure: bool = True):
        import ipywidgets as w

        if hasattr(rollouts, "rollouts"):  # a Run
            rollouts = rollouts.rollouts
        check_rollouts(rollouts)
        if rollouts.empty:
            raise ValueError("no rollouts to browse (the run logged no completions)")
        self.rollouts, self.image_root, self.box_convention, self.figure = rollouts, image_root, box_convention, figure
        self.steps = sorted(int(s) for s in rollouts["step"].unique())
        funcs = [f.removeprefix("rewards/") for f in reward_columns(rollouts)]
        self.step = w.IntSlider(value=self.steps[0], min=self.steps[0], max=self.steps[-1], description="step",
                                continuous_update=False)
        self.group = w.Dropdown(description="group", layout=w.Layout(width="28em"))
        self.kind = w.ToggleButtons(options=[(KIND_LABELS[k], k) for k in KINDS], value="all", description="show")
        self.reward = w.Dropdown(options=[("filter default", ""), ("total", "reward"), *[(f, f) for f in funcs]],
                                 value="", description="reward")
        self.threshold = w.FloatText(value=float(threshold), description="threshold", layout=w.Layout(width="14em"))
        self.worst = w.Button(description="next worst", tooltip="jump to the next-worst group matching the filter")
        self.status = w.HTML()
        self.view = w.HTML()
        self._worst_index, self._busy = -1, False
        self.widget = w.VBox([w.HBox([self.step, self.group]), self.kind,
                              w.HBox([self.reward, self.threshold, self.worst]), self.status, self.view])
        self.step.observe(self._on_filter, names="value")
        for control in (self.kind, self.reward, self.threshold):
            control.observe(self._on_filter_change, names="value")
        self.group.observe(self._on_group, names="value")
        self.worst.on_click(self._on_worst)
        self._on_filter()

    # --- selection -------------------------------------------------------------------------------------------

    def _filter_args(self) -> dict:
        kind = self.kind.value
        threshold = self.threshold.value if kind in ("below", "failures") else None
        return {"kind": kind, "reward": self.reward.value or None, "threshold": threshold}

    def matching(self, step: int | None = None) -> pd.DataFrame:
        """Groups that pass the current filter (at `step`, or at every step)."""
        return filter_groups(self.rollouts, step=step, **self._filter_args())

    def _on_filter_change(self, change=None):
        self._worst_index = -1
        self._on_filter()

    def _on_filter(self, change=None):
        if self._busy:
            return
        self._busy = True
        try:
            try:
                table = self.matching(self.step.value)
                error = None
            except ValueError as exc:
                table, error = pd.DataFrame(columns=["group", "prompt_id", "mean"]), str(exc)
            options = [(f"group {g} · prompt {p} · mean {_num(m)}", int(g))
                       for g, p, m in table[["group", "prompt_id", "mean"]].itertuples(index=False)]
            self.group.options = options
            self.group.value = options[0][1] if options else None
        finally:
            self._busy = False
        self._render(error)

    def _on_group(self, change=None):
        if not self._busy:
            self._render()

    def _on_worst(self, _button=None):
        worst = worst_groups(self.rollouts, n=len(self.rollouts), **self._filter_args())
        if worst.empty:
            self.status.value = "<i>no group matches the filter at any step</i>"
            return
        self._worst_index = (self._worst_index + 1) % len(worst)
        step, group = (int(v) for v in worst.loc[self._worst_index, GROUP_KEYS])
        self._busy = True
        try:
            self.step.value = step
        finally:
            self._busy = False
        self._on_filter()
        self.group.value = group
        self.status.value += f" · worst #{self._worst_index + 1} of {len(worst)}"

    def _render(self, error: str | None = None):
        step, group = self.step.value, self.group.value
        if error is not None:
            self.status.value = f"<b>filter error:</b> {_esc(error)}"
            self.view.value = ""
            return
        n_step = int((self.rollouts.drop_duplicates(GROUP_KEYS)["step"] == step).sum())
        n_match = len(self.group.options)
        label = KIND_LABELS[self.kind.value]
        self.status.value = f"step {step}: {n_match} of {n_step} groups shown ({label})"
        if step not in self.steps:
            self.view.value = f"<i>no rollouts logged at step {step} (logged: {self.steps})</i>"
        elif group is None:
            others = sorted(set(self.matching()["step"].tolist()))
            self.view.value = (f"<i>no group at step {step} matches '{label}'; steps with matches: "
                               f"{others if others else 'none'}</i>")
        else:
            view = group_view(self.rollouts, step, group, box_convention=self.box_convention)
            self.view.value = view_html(view, image_root=self.image_root, figure=self.figure)

    # --- display ---------------------------------------------------------------------------------------------

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        if isinstance(bundle, tuple):  # (data, metadata)
            data, metadata = bundle
        else:
            data, metadata = bundle, {}
        data = {**data, "text/plain": f"RolloutBrowser: {len(self.steps)} steps, step {self.step.value}, "
                                      f"group {self.group.value}",
                "text/html": f"<div>{self.status.value}</div>{self.view.value}"}
        return data, metadata
