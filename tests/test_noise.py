"""mmr1kit.noise: each filter removes its message, and only from where it comes."""

import logging
import os
import warnings

from mmr1kit import noise


def _shown(message: str, module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        noise.filter_library_warnings()
        warnings.warn_explicit(message, FutureWarning, "modeling_utils.py", 3303, module=module)
    return bool(caught)


def test_library_warnings_are_ignored_by_message_and_module():
    for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable", "gradient_checkpointing_disable"):
        message = f"`{name}` is deprecated and will be removed in v6."
        assert not _shown(message, "transformers.modeling_utils")
        assert _shown(message, "mmr1kit.trainer")  # the same words from anywhere else still show
    assert _shown("`something_else` is deprecated", "transformers.modeling_utils")


def _kept(filter_, msg, *args):
    record = logging.LogRecord("papermill", logging.INFO, __file__, 1, msg, args, None)
    return record.getMessage() if filter_.filter(record) else None


def test_papermill_console_keeps_outputs_and_drops_banners_reprs_and_blank_lines():
    drop = noise._DropNoise(noise.PAPERMILL_NOISE)
    assert _kept(drop, "Executing Cell 7-----------------------") is None
    assert _kept(drop, "Ending Cell 7------------------------------") is None
    assert _kept(drop, "Executing notebook with kernel: python3") is None
    assert _kept(drop, "<IPython.core.display.HTML object>") is None
    assert _kept(drop, "<Figure size 640x480 with 1 Axes>\n") is None
    assert _kept(drop, "\n") is None
    assert _kept(drop, "run folder: runs/smoke\n") == "run folder: runs/smoke"
    assert _kept(drop, "<answer>3</answer>") == "<answer>3</answer>"  # a completion is a result, not a repr
    assert _kept(drop, "figure: runs/smoke/kl.png") == "figure: runs/smoke/kl.png"


def test_report_log_drops_nbconverts_alt_text_warning_only():
    log = noise.report_log()
    [drop] = [f for f in log.filters if isinstance(f, noise._DropNoise)]
    assert _kept(drop, "Alternative text is missing on %s image(s).", 6) is None
    assert _kept(drop, "Template %s not found", "lab") == "Template lab not found"
    assert noise.report_log().filters == log.filters  # installed once


def test_kernel_config_puts_the_sockets_in_a_private_folder_removed_after():
    with noise.kernel_config() as kwargs:
        if os.name != "posix":
            assert kwargs == {}
            return
        manager = kwargs["config"]["KernelManager"]
        folder = os.path.dirname(manager["ip"])
        assert manager["transport"] == "ipc" and os.path.isdir(folder) and os.path.isabs(manager["ip"])
    assert not os.path.exists(folder)


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bar_on_a_terminal_not_in_a_log_file(monkeypatch):
    monkeypatch.setattr("sys.stderr", _Stream(tty=True))
    assert noise.show_progress_bar(True) is True
    assert noise.show_progress_bar(False) is False
    monkeypatch.setattr("sys.stderr", _Stream(tty=False))  # captured: each redraw would be one more line
    assert noise.show_progress_bar(True) is False
