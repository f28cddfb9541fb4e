"""mmr1kit.progress: text progress lines for headless notebook runs."""

import io

import pytest
import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.utils.notebook import NotebookProgressCallback

from mmr1kit.progress import HEADLESS_ENV, TextProgressCallback, format_duration, headless, use_text_progress


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (8.4, "8s"), (59.6, "1m00s"), (75.2, "1m15s"),
                                                (3600, "1h00m"), (4000, "1h06m"), (-3, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True)])
def test_headless_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(HEADLESS_ENV, value)
    assert headless() is expected


def drive(callback, max_steps, logs_at):
    """Run the Trainer's callback order: on_step_end, then on_log for the steps that log."""
    args, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerControl()
    state = TrainerState(max_steps=max_steps)
    callback.on_train_begin(args, state, control)
    for step in range(1, max_steps + 1):
        state.global_step = step
        callback.on_step_end(args, state, control)
        if step in logs_at:
            callback.on_log(args, state, control, logs={"loss": 0.5, "reward": step / 10, "kl": 0.001,
                                                        "learning_rate": 1e-4})
    callback.on_train_end(args, state, control)


def test_a_line_every_few_steps_with_the_steps_own_metrics():
    out = io.StringIO()
    drive(TextProgressCallback("grpo", stream=out), max_steps=40, logs_at=range(1, 41))
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [f"[grpo] step {s}/40 ({100 * s // 40}%)"
                                                         for s in range(2, 41, 2)]  # 20 lines a run
    assert "reward 4.000" in lines[-1] and "kl 0.0010" in lines[-1] and "loss 0.5000" in lines[-1]
    assert "learning_rate" not in lines[-1] and "s/step" in lines[-1] and "left" in lines[-1]


def test_a_step_that_logs_nothing_still_gets_its_line():
    out = io.StringIO()
    drive(TextProgressCallback("warm start", every=3, stream=out), max_steps=10, logs_at={5})
    lines = out.getvalue().splitlines()
    assert [line.split(" ·")[0] for line in lines] == ["[warm start] step 3/10 (30%)", "[warm start] step 6/10 (60%)",
                                                       "[warm start] step 9/10 (90%)", "[warm start] step 10/10 (100%)"]
    assert "reward" not in lines[0] and "reward 0.500" in lines[1]  # metrics of the latest log


def tiny_trainer(tmp_path, callbacks):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return Trainer(model=torch.nn.Linear(2, 2), args=args, callbacks=callbacks)


def callback_types(trainer):
    return [type(cb) for cb in trainer.callback_handler.callbacks]


def test_swaps_the_notebook_table_only_when_headless(tmp_path, monkeypatch):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    trainer = tiny_trainer(tmp_path, [NotebookProgressCallback])
    assert use_text_progress(trainer, "grpo")
    assert NotebookProgressCallback not in callback_types(trainer) and TextProgressCallback in callback_types(trainer)

    monkeypatch.setenv(HEADLESS_ENV, "0")  # JupyterLab: the table stays
    trainer = tiny_trainer(tmp_path, [NotebookProgressCallback])
    assert not use_text_progress(trainer) and NotebookProgressCallback in callback_types(trainer)


def test_outside_a_notebook_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    trainer = tiny_trainer(tmp_path, None)  # a terminal: tqdm's bar, or printed logs where bars are disabled
    before = callback_types(trainer)
    assert NotebookProgressCallback not in before
    assert not use_text_progress(trainer) and callback_types(trainer) == before
