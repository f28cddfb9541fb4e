"""Plain-text training progress for notebooks executed headlessly (`mmr1kit run`, papermill).

In a Jupyter kernel transformers shows training progress with `NotebookProgressCallback`, an HTML table updated in
place. That is right in JupyterLab, but a notebook executed by papermill streams only text to the terminal: the table
arrives there as one `<IPython.core.display.HTML object>` line and a long training cell looks frozen until it ends.
`mmr1kit.notebook.run_notebook` sets `MMR1KIT_HEADLESS=1` for the kernel it starts; trainers built by mmr1kit then
print a line every few steps instead (`TextProgressCallback`), which papermill relays as it comes and the HTML
report keeps.
"""

import os
import sys
import time

from transformers import TrainerCallback
from transformers.utils.notebook import NotebookProgressCallback

HEADLESS_ENV = "MMR1KIT_HEADLESS"
# The environment of the kernels `run_notebook` starts. Loading bars (weights, dataset maps) reach papermill's log as
# one frozen "0%" line each, so they are switched off there; training progress comes from this module instead.
HEADLESS_KERNEL_ENV = {HEADLESS_ENV: "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
# metrics shown when a trainer logs them, in this order: (logged key, label, format)
SHOWN = (
    ("loss", "loss", "{:.4f}"),
    ("reward", "reward", "{:.3f}"),
    ("kl", "kl", "{:.4f}"),
    ("entropy", "entropy", "{:.3f}"),
    ("temperature", "temp", "{:.2f}"),
    ("mean_token_accuracy", "token acc", "{:.3f}"),
)


def headless() -> bool:
    """Whether this process runs under `mmr1kit run` (the variable is set, and not to "0")."""
    return os.environ.get(HEADLESS_ENV, "0") not in ("", "0")


def format_duration(seconds: float) -> str:
    """`75.2` -> `"1m15s"`, `4000` -> `"1h06m"`, `8.4` -> `"8s"`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TextProgressCallback(TrainerCallback):
    """One line of progress every `every` optimizer steps (default: 20 lines a run) and at the last step:

        [grpo] step 40/200 (20%) · 31s elapsed, 0.78 s/step, ~2m05s left · loss 0.0123 · reward 0.812 · kl 0.0021

    Metrics are the trainer's latest logged values (`logging_steps`), so they are as fresh as its logging.
    """

    def __init__(self, name: str = "train", every: int | None = None, stream=None):
        self.name, self.every, self.stream = name, every, stream
        self._start = self._first_step = self._pending = None
        self._logs = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._first_step = time.perf_counter(), state.global_step
        if self.every is None:
            self.every = max(1, state.max_steps // 20)

    # A step's metrics are logged after its `on_step_end`: a due line waits for that log, or for the next step when
    # the step logged nothing (`logging_steps` coarser than `every`).
    def on_step_end(self, args, state, control, **kwargs):
        self._flush(state)
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._pending = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._logs.update(logs or {})
        self._flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(state)

    def _flush(self, state):
        if self._pending is not None:
            print(self.line(self._pending, state.max_steps), file=self.stream or sys.stdout, flush=True)
            self._pending = None

    def line(self, step: int, max_steps: int) -> str:
        elapsed = time.perf_counter() - self._start
        done = step - self._first_step
        parts = [f"[{self.name}] step {step}/{max_steps} ({100 * step / max(1, max_steps):.0f}%)"]
        timing = f"{format_duration(elapsed)} elapsed"
        if done > 0:
            per_step = elapsed / done
            timing += f", {per_step:.2f} s/step, ~{format_duration(per_step * (max_steps - step))} left"
        parts.append(timing)
        for key, label, fmt in SHOWN:
            value = self._logs.get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{label} {fmt.format(value)}")
        return " · ".join(parts)


def use_text_progress(trainer, name: str = "train") -> bool:
    """Swap the trainer's notebook progress table for `TextProgressCallback` when running headless.

    Returns whether it swapped. In JupyterLab (not headless) and in a terminal (no notebook table) nothing changes.
    """
    has_table = any(isinstance(cb, NotebookProgressCallback) for cb in trainer.callback_handler.callbacks)
    if not (headless() and has_table):
        return False
    trainer.remove_callback(NotebookProgressCallback)
    trainer.add_callback(TextProgressCallback(name))
    return True
