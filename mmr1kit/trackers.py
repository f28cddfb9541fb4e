"""Experiment trackers beside the run record: TensorBoard, trackio and Weights & Biases through `report_to`.

The run folder stays the source of truth: `metrics.jsonl` is written whatever `report_to` says. A tracker gets the
same logs, through transformers' integration callbacks, which `use_trackers` replaces by subclasses that change two
things only:

- names and steps: transformers writes `train/<name>` (`eval_<name>` as `eval/<name>`) and trackio numbers its points
  with a counter of its own (0, 1, ...: one behind the trainer's step). Here every tracker gets the names of
  `metrics.jsonl` at its `step` (wandb's x-axis `train/global_step` holds that step), and the end-of-training figures
  under the names of `summary.json` (`train/train_runtime`, ...). A metric TRL logged as `None` (no valid value that
  step) is sent as NaN, so every name of `metrics.jsonl` is in the tracker at every step.
- where the files go: TensorBoard's event files to `<run_dir>/tensorboard` (transformers: under `output_dir`), wandb's
  run folder to `<run_dir>/wandb` (`WANDB_DIR` wins when set), and the tracker run is named after the run folder
  and the run's start (`run_name` wins when set), so trackio never continues another run of the same folder name.
  A resumed run hides TensorBoard's points after its checkpoint (`purge_step`), as the run record drops them.

Rollouts reach the trackers as a table (`RolloutTables`): every `tracker_rollouts_every` steps (the first step, then
every N), the first `tracker_rollouts_max_rows` rows the step appended to `rollouts.jsonl`, under the same column
names. wandb and trackio get a table with the image; TensorBoard has no table type, so it gets a Markdown table
(text plugin) with the image's path.

`config_error` is `MMR1Config`'s check: a tracker that is not installed, or whose folder cannot be written, is one
line at config time. Locations go to the manifest's `trackers` entry. `docs/trackers.md` has the recipes.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

from transformers.integrations import TensorBoardCallback, TrackioCallback, WandbCallback

INSTALL = "pip install 'mmr1kit[trackers]' (tensorboard, trackio, wandb)"
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
SUMMARY_KEY = "train_runtime"  # in the trainer's last log: the end-of-training figures (summary.json)
COLUMNS = ("step", "prompt_id", "group", "image", "problem", "solution", "completion")  # then rewards/*, ...
SIGNAL_COLUMNS = ("kl_penalty", "try", "trained")  # rollouts.jsonl's dynamic-sampling / KL-in-reward fields
TEXT_LIMIT = 500  # characters of a completion / problem in TensorBoard's Markdown table


# --- config time ----------------------------------------------------------------------------------------------------


def requested(report_to) -> list[str]:
    """`report_to` as a list of names: `None` / `"none"` -> `[]`, `"a,b"` -> `["a", "b"]`, `"all"` -> every
    integration transformers finds installed."""
    from transformers.integrations import get_available_reporting_integrations

    items = report_to if isinstance(report_to, (list, tuple)) else [] if report_to is None else [report_to]
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return get_available_reporting_integrations()
    return names


def tensorboard_dir(config) -> Path:
    return Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or Path(config.run_dir) / "tensorboard").expanduser()


def wandb_dir(config) -> Path:
    """The folder wandb creates its `wandb/` folder in."""
    return Path(os.environ.get("WANDB_DIR") or config.run_dir).expanduser()


def trackio_dir() -> Path:
    """trackio's local store (`TRACKIO_DIR`, else `$HF_HOME/trackio`), as trackio resolved it when imported."""
    import sys

    if "trackio.utils" in sys.modules:  # fixed when trackio is imported (TRL imports it with its trainer)
        return Path(sys.modules["trackio.utils"].TRACKIO_DIR)
    from huggingface_hub.constants import HF_HOME

    return Path(os.environ.get("TRACKIO_DIR") or Path(HF_HOME) / "trackio").expanduser()


def unwritable(folder: Path) -> str | None:
    """Why `folder` cannot be created or written (without creating anything), or None when it can."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def config_error(config) -> tuple[str, str] | None:
    """`(field, message)` for the first `report_to` tracker that would fail to start, or None.

    Normalises `config.report_to` to a list (`"tensorboard,wandb"` works from a notebook parameter). Checked: the name
    is an integration transformers knows; tensorboard / trackio / wandb are installed; their folders can be written;
    `WANDB_MODE` is one wandb accepts.
    """
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        is_tensorboard_available,
        is_trackio_available,
        is_wandb_available,
    )

    from mmr1kit.config_checks import unknown_names

    names = requested(config.report_to)
    config.report_to = names
    unknown = unknown_names(names, INTEGRATION_TO_CALLBACK)
    if unknown:
        known = ", ".join(sorted(INTEGRATION_TO_CALLBACK))
        return "report_to", f"unknown tracker(s) {unknown}; expected some of {known}, or all / none"
    installed = {"tensorboard": is_tensorboard_available, "trackio": is_trackio_available, "wandb": is_wandb_available}
    missing = [n for n in names if n in installed and not installed[n]()]
    if missing:
        return "report_to", f"{', '.join(missing)} not installed: {INSTALL}, or leave {', '.join(missing)} out"
    def remedy(variable):  # the folder comes from the variable when it is set, else from run_dir
        return f"set {variable} to a writable folder" if os.environ.get(variable) else (
            f"choose a writable run_dir or set {variable}")

    folders = {"tensorboard": ("TensorBoard's event files", tensorboard_dir(config),
                               remedy("TENSORBOARD_LOGGING_DIR")),
               "wandb": ("wandb's run folder", wandb_dir(config), remedy("WANDB_DIR")),
               "trackio": ("trackio's local store", trackio_dir(), "set TRACKIO_DIR (before Python starts)")}
    for name in names:
        if name in folders:
            what, folder, how = folders[name]
            why = unwritable(folder)
            if why:
                return "report_to", f"{name}: cannot write {what} to {folder} ({why}); {how}"
    mode = os.environ.get("WANDB_MODE")
    if "wandb" in names and mode is not None and mode not in WANDB_MODES:
        return "report_to", f"wandb: WANDB_MODE={mode!r} is not a wandb mode; expected one of {WANDB_MODES}"
    return None


# --- what a tracker gets --------------------------------------------------------------------------------------------


def step_logs(logs: dict) -> tuple[dict, bool]:
    """`(logs under the run record's names, whether they are the end-of-training summary)`.

    A step's logs keep their names (as in `metrics.jsonl`); the summary's get `train/` (as in `summary.json`).
    `None` becomes NaN, so the name is there at that step.
    """
    summary = SUMMARY_KEY in logs
    out = {}
    for key, value in logs.items():
        out[f"train/{key}" if summary else key] = float("nan") if value is None else value
    return out, summary


def run_name(args, recorder=None) -> str:
    """`args.run_name`, else `<run folder>-<YYYYmmdd-HHMMSS of the run's start>`: the same on every resume (the
    manifest keeps the first start), different for a new run in a folder of the same name."""
    if args.run_name:
        return args.run_name
    started = None
    if recorder is not None and (recorder.path / "manifest.json").is_file():
        import json

        started = json.loads((recorder.path / "manifest.json").read_text()).get("started")
    return f"{Path(args.run_dir).name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}"


def named(args, name: str):
    """A shallow copy of `args` with `run_name` set (transformers' set-up reads it; the run's config is unchanged)."""
    args = copy.copy(args)
    args.run_name = name
    return args


class _Tracker:
    """What the three trackers share: a run name, a place in the manifest, a rollout table."""

    kind = ""

    def _bind(self, trainer):
        self.recorder = getattr(trainer, "recorder", None)

    def _name(self, args) -> str:
        return run_name(args, self.recorder)

    def _where(self, **info) -> None:
        if self.recorder is None:
            return
        import json

        path = self.recorder.path / "manifest.json"
        current = json.loads(path.read_text()).get("trackers", {}) if path.is_file() else {}
        self.recorder.update_manifest(trackers={**current, self.kind: {k: str(v) for k, v in info.items()}})

    def log_table(self, step: int, rows: list[dict]) -> None:
        raise NotImplementedError


class TensorBoardTracker(_Tracker, TensorBoardCallback):
    """transformers' `TensorBoardCallback`, writing `metrics.jsonl`'s names to `<run_dir>/tensorboard`."""

    kind = "tensorboard"

    def __init__(self, trainer):
        TensorBoardCallback.__init__(self)
        self._bind(trainer)
        self.logging_dir = str(tensorboard_dir(trainer.args))
        self._purge_step = None

    def _init_summary_writer(self, args):
        self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir, purge_step=self._purge_step)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resumed: points the dead process wrote after the checkpoint are hidden
            self._purge_step = state.global_step + 1
        super().on_train_begin(args, state, control, **kwargs)
        if state.is_world_process_zero:
            self._where(logdir=self.logging_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        values, _ = step_logs(logs)
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.tb_writer.add_scalar(key, value, state.global_step)
            else:  # TRL logs numbers; anything else is kept as text rather than dropped
                self.tb_writer.add_text(key, str(value), state.global_step)
        self.tb_writer.flush()

    def log_table(self, step, rows):
        if self.tb_writer is not None:
            self.tb_writer.add_text("rollouts", markdown_table(rows), step)
            self.tb_writer.flush()


class WandbTracker(_Tracker, WandbCallback):
    """transformers' `WandbCallback`, logging `metrics.jsonl`'s names against `train/global_step`, its run folder in
    `<run_dir>/wandb` (set `WANDB_MODE=offline` to write it without network, then `wandb sync` it)."""

    kind = "wandb"

    def __init__(self, trainer):
        WandbCallback.__init__(self)
        self._bind(trainer)
        self._started = False  # this callback started the wandb run (not the user's own wandb.init)

    def setup(self, args, state, model, **kwargs):
        name = self._name(args)
        if state.is_world_process_zero and self._wandb.run is None:
            folder = wandb_dir(args)
            folder.mkdir(parents=True, exist_ok=True)
            self._wandb.init(project=os.getenv("WANDB_PROJECT") or args.project, name=name, dir=str(folder))
            self._started = True
        super().setup(named(args, name), state, model, **kwargs)
        if state.is_world_process_zero and self._wandb.run is not None:
            run = self._wandb.run
            self._where(dir=Path(run.dir).parent, id=run.id, project=run.project, name=run.name,
                        mode=os.environ.get("WANDB_MODE", "online"))

    def on_train_end(self, args, state, control, **kwargs):
        """Finish the run this callback started (transformers leaves it open until the process exits): its files are
        complete for `wandb sync` when training returns, and a next trainer in the same notebook kernel gets a run of
        its own instead of logging into this one."""
        super().on_train_end(args, state, control, **kwargs)
        if self._started and state.is_world_process_zero:
            self._wandb.finish()
            self._started = self._initialized = False

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self._wandb is None or not logs:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        values, summary = step_logs(logs)
        if summary:
            self._wandb.run.summary.update(values)
        else:
            self._wandb.log({**values, "train/global_step": state.global_step})

    def log_table(self, step, rows):
        if self._wandb is None or self._wandb.run is None:
            return
        columns = table_columns(rows)
        data = [[self._wandb.Image(r["image"]) if c == "image" and r.get("image") else r.get(c) for c in columns]
                for r in rows]
        self._wandb.log({"rollouts": self._wandb.Table(columns=columns, data=data), "train/global_step": step})


class TrackioTracker(_Tracker, TrackioCallback):
    """transformers' `TrackioCallback`, logging `metrics.jsonl`'s names at the trainer's step (trackio's own counter
    runs one behind), in project `project`, under the run name of `run_name`."""

    kind = "trackio"

    def __init__(self, trainer):
        TrackioCallback.__init__(self)
        self._bind(trainer)

    def setup(self, args, state, model, **kwargs):
        name = self._name(args)
        super().setup(named(args, name), state, model, **kwargs)
        if state.is_world_process_zero:
            self._where(dir=trackio_dir(), project=args.project, name=name)

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if not logs:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if state.is_world_process_zero:
            values, _ = step_logs(logs)
            self._trackio.log(values, step=state.global_step)

    def log_table(self, step, rows):
        if not self._initialized:
            return
        import pandas as pd

        columns = table_columns(rows)
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
        frame["image"] = [self._trackio.Image(r["image"]) if r.get("image") else None for r in rows]
        self._trackio.log({"rollouts": self._trackio.Table(dataframe=frame)}, step=step)


REPLACES = {TensorBoardCallback: TensorBoardTracker, WandbCallback: WandbTracker, TrackioCallback: TrackioTracker}


# --- rollout tables -------------------------------------------------------------------------------------------------


def table_columns(rows: list[dict]) -> list[str]:
    """The table's columns: `COLUMNS`, each `rewards/<func>`, then `reward`, `advantage`, `length`, `truncated`, and
    those of `SIGNAL_COLUMNS` the rows have (which try of the step, whether it trained: `mmr1kit.signal`)."""
    rewards = list(dict.fromkeys(k for r in rows for k in r if k.startswith("rewards/")))  # reward_funcs' order
    signal = [k for k in SIGNAL_COLUMNS if any(k in r for r in rows)]
    return [*COLUMNS, *rewards, "reward", "advantage", "length", "truncated", *signal]


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (TensorBoard's text plugin renders it); long texts cut at `TEXT_LIMIT`."""

    def cell(value):
        text = f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)
        text = text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"
        return text.replace("|", "\\|").replace("\n", "<br>")

    columns = table_columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class RolloutTables:
    """Sends a step's rollouts to every tracker that takes tables, throttled.

    Args:
        trackers (`list`): The `*Tracker` callbacks of the trainer.
        every (`int`): Send the rollouts of step 1, 1 + every, 1 + 2·every, ...; 0: never.
        max_rows (`int`): At most this many rows a time (the step's first rows: whole groups first).
    """

    def __init__(self, trackers, every: int, max_rows: int):
        self.trackers, self.every, self.max_rows = list(trackers), every, max_rows

    def due(self, step: int) -> bool:
        return bool(self.trackers) and self.every > 0 and (step - 1) % self.every == 0

    def log(self, records: list[dict]) -> int:
        """Send `records` (one step's rows of `rollouts.jsonl`) when their step is due; return the rows sent."""
        if not records or not self.due(records[0]["step"]):
            return 0
        rows = records[: self.max_rows]
        for tracker in self.trackers:
            tracker.log_table(rows[0]["step"], rows)
        return len(rows)


def use_trackers(trainer) -> RolloutTables:
    """Swap transformers' TensorBoard / wandb / trackio callbacks of `trainer` for the ones above; return the
    rollout table sender (`mmr1kit.rounds.record_rounds` calls its `log`, once per step)."""
    ours = []
    for theirs, mine in REPLACES.items():
        if any(type(cb) is theirs for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(theirs)
            ours.append(mine(trainer))
            trainer.add_callback(ours[-1])
    return RolloutTables(ours, trainer.args.tracker_rollouts_every, trainer.args.tracker_rollouts_max_rows)
