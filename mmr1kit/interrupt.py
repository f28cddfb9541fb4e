"""Ctrl-C during training: finish the step, save a checkpoint, stop, and say how to resume. No traceback.

In a training process (`python -m mmr1kit.train`, a notebook kernel, a script using `MMR1Trainer`), `stop_on_interrupt`
turns the first SIGINT into a request: the step that is running finishes, a checkpoint of it is saved, and
`MMR1Trainer.train` raises `TrainingInterrupted` (a `KeyboardInterrupt`) naming the step and the checkpoint. A second
Ctrl-C stops at once. In a notebook, IPython shows the exception as one line (`_render_traceback_`).

`mmr1kit run` executes the notebook in a Jupyter kernel, which runs in its own session and does not see the
terminal's Ctrl-C; `forward_interrupts` passes it on to the kernel instead of letting it tear papermill down mid-call.
`describe_stop` reads what a stopped run left (last checkpoint, steps) for the one line the command prints.

One process only: under `accelerate launch` the launcher stops its workers itself on Ctrl-C (SIGTERM), so a run of
several processes resumes from its last regular checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

NOTICE = "Ctrl-C: finishing this step and saving a checkpoint, then stopping (Ctrl-C again stops at once)"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C at the end of step `step` of `max_steps`, with a checkpoint of it in `checkpoint`."""

    def __init__(self, step: int, max_steps: int, checkpoint: str | None, run_dir: str | None = None):
        self.step, self.max_steps, self.checkpoint, self.run_dir = step, max_steps, checkpoint, run_dir
        super().__init__(str(self))

    def __str__(self) -> str:
        saved = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint"
        return f"training stopped by Ctrl-C at step {self.step} of {self.max_steps}; {saved}"

    def _render_traceback_(self) -> list[str]:  # IPython: show this line instead of a traceback
        return [f"{type(self).__name__}: {self}"]


class StopOnInterrupt(TrainerCallback):
    """Ends training after the step during which `requested` was set, with a checkpoint of that step."""

    def __init__(self):
        self.requested = False
        self.stopped_at = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested and self.stopped_at is None:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step


@contextlib.contextmanager
def stop_on_interrupt(trainer):
    """While `trainer.train` runs in this block, the first SIGINT asks for a stop at the end of the step.

    Yields the `StopOnInterrupt` callback (its `stopped_at` is the step, or None). Does nothing outside the main
    thread or with several processes (see the module docstring).
    """
    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, StopOnInterrupt)), None)
    if callback is None:
        callback = StopOnInterrupt()
        trainer.add_callback(callback)
    callback.requested, callback.stopped_at = False, None
    if threading.current_thread() is not threading.main_thread() or trainer.accelerator.num_processes > 1:
        yield callback
        return

    def handler(signum, frame):
        if callback.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        callback.requested = True
        print(NOTICE, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield callback
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_stopped(trainer, callback: StopOnInterrupt) -> None:
    """After `train`: record the stop in `summary.json` and raise `TrainingInterrupted` when training stopped early."""
    step = callback.stopped_at
    if step is None or step >= trainer.state.max_steps:
        return
    checkpoint = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    checkpoint = str(checkpoint) if checkpoint.is_dir() else None
    if trainer.recorder is not None:
        trainer.recorder.write_summary(interrupted={"step": step, "max_steps": trainer.state.max_steps,
                                                    "checkpoint": checkpoint})
    raise TrainingInterrupted(step, trainer.state.max_steps, checkpoint, trainer.args.run_dir)


@contextlib.contextmanager
def forward_interrupts():
    """While a notebook executes in a kernel this process started: Ctrl-C is passed on to the kernel.

    The kernel (its own session, as `jupyter_client` starts it) then stops training at the end of the step and the
    notebook ends with that cell's one-line error, which papermill reports like any other. Yields a dict whose
    `"count"` is the number of Ctrl-C received. Without a kernel to pass it to, or at the third Ctrl-C,
    `KeyboardInterrupt` is raised here.
    """
    state = {"count": 0}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        import psutil  # the kernels are this process's children; psutil lists them on every platform

        state["count"] += 1
        kernels = [c.pid for c in psutil.Process().children() if _session_leader(c.pid)]
        if not kernels or state["count"] > 2:
            raise KeyboardInterrupt
        for pid in kernels:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGINT)  # what jupyter_client's interrupt_kernel sends in "signal" mode

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


def describe_stop(run_dir) -> dict:
    """What a stopped run left in `run_dir`: `{"step", "max_steps", "checkpoint"}` (values None when absent)."""
    run_dir = Path(run_dir)

    def read(name):
        try:
            return json.loads((run_dir / name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    stopped = (read("summary.json") or {}).get("interrupted") or {}
    checkpoints = read("checkpoints.json") or []
    last = max(checkpoints, key=lambda c: c["step"]) if checkpoints else None
    steps = 0
    with contextlib.suppress(OSError):
        steps = sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    return {
        "step": stopped.get("step", steps if steps else None),
        "max_steps": stopped.get("max_steps", (read("config.json") or {}).get("max_steps")),
        "checkpoint": stopped.get("checkpoint") or (last["path"] if last else None),
    }
