"""One run per folder, and a resume that continues the run it resumes.

- `claim_run_dir`: before a run starts (before any model loads), a folder that already holds a run record is refused,
  unless the run resumes it or the caller asked to move the old record aside (`<run_dir>.old-<YYYYmmdd-HHMMSS>`).
  Without it, two runs would append to one `metrics.jsonl`.
- `resume_conflicts` / `config_from_record`: a resumed run takes its parameters from its own `config.json`; a new
  value that differs from the record is refused unless it is named in `allow_changes`.
- `start_run`: both, for a trainer or a notebook about to train into `config.run_dir`.
- `resolve_resume`: what `resume_from_checkpoint` means (`true`, `auto`, a checkpoint path).

Every entry point calls these: `python -m mmr1kit.train`, `MMR1Trainer`, notebook 01, `mmr1kit run` (through
`mmr1kit.preflight`). The messages name the folder and the ways out in the words of the entry point (`WAYS`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

# What a run writes (mmr1kit.runs); an executed notebook, its HTML report or a warm start alone are not a run record.
RECORD = ("config.json", "manifest.json", "metrics.jsonl", "rollouts.jsonl", "prompts.jsonl", "checkpoints.json",
          "summary.json", "checkpoints", "final", "capsules")
# Fields that say where a run is or how it starts, not what it trains: never a conflict on resume.
# Fields a resume may change freely: where things go, and what changes no result (the image caches change numbers
# only by float rounding; the trackers only watch)
NOT_COMPARED = ("run_dir", "output_dir", "logging_dir", "resume_from_checkpoint", "overwrite_run_dir", "allow_changes",
                "encode_images_once", "report_to", "tracker_rollouts_every", "tracker_rollouts_max_rows")
OWN = ("dataset",)  # normalised by mmr1kit.config_checks (made absolute when it names a file of the checkout)
TRUE = ("true", "yes", "1", "latest")
FALSE = ("", "false", "no", "0", "none")

# The ways out of a folder that holds a run, in the words of each entry point: (resume, another folder, overwrite)
WAYS = {
    "api": ("resume_from_checkpoint=True", "another run_dir", "overwrite_run_dir=True"),
    "train": ("--resume_from_checkpoint true", "another --run_dir", "--overwrite_run_dir"),
    "cli": ("--resume", "another --run-dir", "--overwrite"),
}
ALLOW = {"api": "allow_changes=[{names}]", "train": "--allow_changes {names}", "cli": "--allow-change {names}"}


class RunFolderInUse(ValueError):
    """The run folder already holds a run, and the new run neither resumes it nor asked to move it aside."""


def run_record(run_dir) -> list[str]:
    """The names of `RECORD` entries present in `run_dir` (empty folders do not count)."""
    path = Path(run_dir)
    return [name for name in RECORD if (path / name).is_file() or ((path / name).is_dir() and any((path / name).iterdir()))]


def _steps_recorded(path: Path) -> int:
    try:
        return sum(1 for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def claim_run_dir(run_dir, *, resume=False, overwrite=False, how: str = "api") -> Path | None:
    """Make sure a new run does not mix its records with another run's; return where an old record was moved.

    Args:
        run_dir: The run folder.
        resume (`bool`): The run resumes the run in the folder: nothing to do.
        overwrite (`bool`): Move a run the folder holds aside, to `<run_dir>.old-<YYYYmmdd-HHMMSS>`, and start afresh.
        how (`str`): `"api"`, `"train"` or `"cli"`: the words of the ways out in the message.

    Raises:
        `RunFolderInUse`: the folder holds a run and neither `resume` nor `overwrite` is set.
    """
    path = Path(run_dir)
    found = run_record(path)
    if not found or resume:
        return None
    if overwrite:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = path.with_name(f"{path.name}.old-{stamp}"), 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.old-{stamp}-{n}")
        shutil.move(str(path), str(target))
        path.mkdir(parents=True)
        return target
    resume_way, other, overwrite_way = WAYS[how]
    steps = _steps_recorded(path)
    said = f"{', '.join(found)}" + (f"; {steps} logged step(s)" if steps else "")
    raise RunFolderInUse(f"run folder {path} already holds a run ({said}): resume it with {resume_way}, choose "
                         f"{other}, or pass {overwrite_way} to move it aside to {path.name}.old-<YYYYmmdd-HHMMSS>")


def resume_requested(value) -> bool:
    """Whether a `resume_from_checkpoint` value asks to resume (`true`, `auto`, a path), not to start afresh."""
    return not (value is None or value is False or str(value).strip().lower() in FALSE)


def resolve_resume(value, output_dir) -> str | None:
    """`resume_from_checkpoint` as `Trainer.train` takes it: None, or the path of one checkpoint folder.

    `True` / `"true"` / `"latest"`: the latest `checkpoint-*` in `output_dir` (an error if there is none);
    `"auto"`: the same, or None when there is none; a path: that folder (an error if it is missing).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not resume_requested(value):
        return None
    text = str(value).strip().lower()
    latest = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
    if value is True or text in TRUE or text == "auto":
        if latest is None and text != "auto":
            raise ValueError(f"resume_from_checkpoint={value!r}: no checkpoint-* folder in {output_dir}; "
                             f"use 'auto' to start afresh when there is none, or name a checkpoint folder")
        return latest
    if not Path(value).is_dir():
        raise ValueError(f"resume_from_checkpoint={value!r}: no such checkpoint folder")
    return str(value)


def checkpoint_step(checkpoint) -> int:
    """The optimizer step a checkpoint folder was saved at (its `trainer_state.json`)."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def check_resume_step(checkpoint, max_steps: int, how: str = "api") -> None:
    """Refuse to resume a run that already reached `max_steps` (transformers would train one step past it)."""
    if checkpoint is None or max_steps is None or max_steps < 0:
        return
    step = checkpoint_step(checkpoint)
    if step >= max_steps:
        raise ValueError(f"resume: the run already reached step {step} of max_steps={max_steps} ({checkpoint}); to "
                         f"train further, raise max_steps and allow it with {ALLOW[how].format(names='max_steps')}")


def recorded_config(run_dir) -> dict | None:
    """The `config.json` of a run folder, or None when there is none."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _plain(value):
    """A value as it reads back from JSON (tuples become lists, enums their values)."""
    return json.loads(json.dumps(value, default=str))


def derived_fields(cls) -> tuple[str, ...]:
    """Fields whose value `__post_init__` fills in when unset (`output_dir`, `generation_batch_size`, ...)."""
    cached = cls.__dict__.get("_mmr1kit_derived")
    if cached is None:
        from dataclasses import MISSING, fields

        config = cls()
        cached = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None)
            if f.init and f.name not in OWN and _plain(config.to_dict().get(f.name)) != _plain(default):
                cached.append(f.name)
        cached = tuple(cached)
        setattr(cls, "_mmr1kit_derived", cached)
    return cached


def resume_conflicts(recorded: dict, values: dict, allow=(), *, run_dir=None, how: str = "api") -> list[str]:
    """One line per field of `values` that differs from the run's `recorded` config and is not in `allow`."""
    lines = []
    where = f"{Path(run_dir) / 'config.json'}" if run_dir is not None else "config.json"
    for name, value in values.items():
        if name in NOT_COMPARED or name in allow or name not in recorded:
            continue
        old, new = _plain(recorded[name]), _plain(value)
        if old != new:
            lines.append(f"resume: {name}={new!r} differs from the run's {name}={old!r} ({where}); leave it out to "
                         f"continue the run as it was, or allow the change with {ALLOW[how].format(names=name)}")
    return lines


def config_from_record(cls, recorded: dict, values: dict):
    """The config of a resumed run: its recorded fields, with `values` (already checked for conflicts) on top.

    Fields that `__post_init__` derives (`generation_batch_size` from the batch size, `output_dir` from `run_dir`)
    are derived again unless the record shows they were set, so a change allowed on resume carries through.
    """
    names = cls.field_names()
    base = {k: v for k, v in recorded.items() if k in names}
    derived = derived_fields(cls)
    kept = {k: v for k, v in base.items() if k not in derived}
    if "output_dir" in base and base["output_dir"] != str(Path(recorded.get("run_dir", "")) / "checkpoints"):
        kept["output_dir"] = base["output_dir"]  # set explicitly: a location of its own
    # Which derived fields were set: those the recorded values alone do not derive to their recorded value.
    same_run = {k: v for k, v in values.items() if k in NOT_COMPARED and k != "output_dir"}
    for _ in range(len(derived) + 1):
        now = _plain(cls.from_dict({**kept, **same_run}).to_dict())
        missing = [k for k in derived if k in base and k not in kept and k not in NOT_COMPARED
                   and now.get(k) != _plain(base[k])]
        if not missing:
            break
        kept[missing[0]] = base[missing[0]]  # one at a time: they derive from each other
    return cls.from_dict({**kept, **values})


@dataclass
class RunStart:
    """What `start_run` found: whether the run resumes, the fields changed on resume, where an old run went, and the
    config as it was given (`config.json`: the trainer's own set-up later edits a few fields of its copy, e.g.
    `ddp_find_unused_parameters`, which would then read as a change on resume)."""

    resume: bool = False
    changes: dict = field(default_factory=dict)  # name -> [recorded, new]
    moved_to: Path | None = None
    config: dict = field(default_factory=dict)


def start_run(config, how: str = "api") -> RunStart:
    """Claim `config.run_dir` for the run `config` describes; on resume, check it against the run's record.

    Raises `RunFolderInUse` or `ValueError` (one line per conflicting field) before anything loads.
    """
    from dataclasses import fields

    resume = resume_requested(config.resume_from_checkpoint)
    moved = claim_run_dir(config.run_dir, resume=resume, overwrite=config.overwrite_run_dir, how=how)
    start = RunStart(resume=resume, moved_to=moved, config=config.to_dict())
    recorded = recorded_config(config.run_dir) if resume else None
    if recorded:
        derived = derived_fields(type(config))
        values = {f.name: getattr(config, f.name) for f in fields(config) if f.init and f.name not in derived}
        lines = resume_conflicts(recorded, values, config.allow_changes, run_dir=config.run_dir, how=how)
        if lines:
            raise ValueError("\n".join(lines))
        start.changes = {name: [recorded[name], _plain(values[name])] for name in config.allow_changes
                         if name in recorded and name in values and _plain(values[name]) != _plain(recorded[name])}
    return start


def open_record(config, start: RunStart, model, train_dataset):
    """The `RunRecorder` of a run `start_run` admitted: config written; the manifest written, or on resume kept and
    extended with this start (time, versions, machine, fields changed)."""
    from mmr1kit.runs import RunRecorder, manifest, write_json

    recorder = RunRecorder(config.run_dir)
    recorder.write_config(start.config or config)
    if start.resume and (recorder.path / "manifest.json").is_file():
        previous = json.loads((recorder.path / "manifest.json").read_text())
        summary_path = recorder.path / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        stop = summary.pop("interrupted", None)  # the stop this start continues from goes to the manifest
        if stop is not None:
            write_json(summary_path, summary)
        this = manifest(config.seed, {"changed": start.changes, "after_stop": stop})
        recorder.update_manifest(resumes=[*previous.get("resumes", []), this])
        return recorder
    bad = getattr(train_dataset, "bad_examples", None) or {}
    recorder.write_manifest(
        seed=config.seed, dataset=config.dataset, model=str(model), train_rows=len(train_dataset),
        bad_examples={k: {"count": len(v), "first": v[:3]} for k, v in bad.items()},
        **({"moved_previous_run_to": str(start.moved_to)} if start.moved_to else {}),
    )
    return recorder
