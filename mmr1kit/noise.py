"""Library noise kept out of reports and consoles, each filter as narrow as the message it removes.

Where the noise was ours it is fixed at its cause (the deprecated `gradient_checkpointing` name in `MMR1Config`, loose
processor kwargs in `mmr1kit.evaluate`); what is left comes from libraries we cannot change:

1. `filter_library_warnings` (installed when `mmr1kit` is imported): Python warnings that a library raises about
   another library's API, which a user of mmr1kit can do nothing about. Each is ignored by message, category and the
   module that raises it, so the same message from any other place still shows.
2. `quiet_papermill` (around `papermill.execute_notebook` in `mmr1kit.notebook.run_notebook`): papermill's console
   log carries the cells' outputs, which are the run's results, between "Executing Cell 7----" / "Ending Cell 7----"
   banners, blank lines and one-line reprs such as `<IPython.core.display.HTML object>`. The banners and reprs are
   dropped, the output lines kept; the progress bar stays below the lines (tqdm's logging redirect) instead of being
   torn by them.
3. `kernel_config`: kernels talk to papermill over IPC sockets in a private folder, not TCP on localhost, so ipykernel
   has no reason to print its "Kernel is running over TCP without encryption" warning into every console.
4. `report_log`: the logger nbconvert renders reports with; drops its "Alternative text is missing on N image(s)"
   (nbconvert's lab template never writes `alt` for a PNG output, so it is said for every figure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings

# (message regex, category, regex of the module that raises it): only these are ignored.
LIBRARY_WARNINGS = (
    # TRL 1.16 reads `model.is_gradient_checkpointing` and, with checkpointing on, toggles it around generation with
    # `gradient_checkpointing_enable/disable`, all deprecated by transformers 5.23; nothing for a user to do.
    (r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated",
     FutureWarning, r"transformers\.modeling_utils"),
)
# papermill's console lines that carry nothing: cell banners, and the text/plain repr of rich outputs
PAPERMILL_NOISE = re.compile(
    r"(Executing|Ending) Cell \d+-*"
    r"|Executing notebook with kernel: .*"
    r"|<[A-Za-z_][\w.]*( [^<>]*)?>"  # <IPython.core.display.HTML object>, <Figure size 640x480 with 1 Axes>
)
NBCONVERT_NOISE = re.compile(r"Alternative text is missing on \d+ image\(s\)\.?")


def filter_library_warnings() -> None:
    """Ignore the warnings of `LIBRARY_WARNINGS` (idempotent: `warnings` drops a duplicate filter)."""
    for message, category, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


class _DropNoise(logging.Filter):
    """Drops records whose whole message matches `pattern`; strips the trailing newlines papermill logs outputs with."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().rstrip()
        if not text.strip() or self.pattern.fullmatch(text.strip()):
            return False
        if isinstance(record.msg, str) and not record.args:
            record.msg = text
        return True


def show_progress_bar(progress: bool) -> bool:
    """Whether papermill's cell progress bar helps: on a terminal or in a notebook, not in a log file, where each of
    its redraws would be one more line between the results."""
    import sys

    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = type(None)
    return progress and (sys.stderr.isatty() or get_ipython() is not None)


@contextlib.contextmanager
def quiet_papermill(progress_bar: bool = True):
    """papermill's console log without banners, blank lines and reprs; with a progress bar, the log lines are written
    above it (tqdm's logging redirect) instead of through it."""
    log = logging.getLogger("papermill")
    noise = _DropNoise(PAPERMILL_NOISE)
    log.addFilter(noise)
    try:
        if progress_bar:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():  # the root logger's console handler, which papermill's records reach
                yield
        else:
            yield
    finally:
        log.removeFilter(noise)


@contextlib.contextmanager
def kernel_config():
    """engine kwargs for `papermill.execute_notebook`: the kernel on IPC sockets in a private temporary folder.

    POSIX only (zmq's IPC transport); elsewhere nothing changes.
    """
    if os.name != "posix":
        yield {}
        return
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="mmr1kit-kernel-") as folder:
        yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k")}})}


def report_log() -> logging.Logger:
    """The logger to give nbconvert's exporters: nbconvert's own, less `NBCONVERT_NOISE`."""
    log = logging.getLogger("mmr1kit.report")
    if not any(isinstance(f, _DropNoise) for f in log.filters):
        log.addFilter(_DropNoise(NBCONVERT_NOISE))
    return log
