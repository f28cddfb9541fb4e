"""mmr1kit.interrupt: Ctrl-C stops training at the end of a step, with a checkpoint, a one-line message and a report.

`tests/test_resume.py` interrupts `python -m mmr1kit.train` for real and resumes it with the printed command; here
the pieces, then `mmr1kit run` of the training notebook interrupted for real.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from mmr1kit.interrupt import StopOnInterrupt, TrainingInterrupted, describe_stop, forward_interrupts
from mmr1kit.runs import RunRecorder
from raw_records import raw_steps

ROOT = Path(__file__).resolve().parent.parent


def test_training_interrupted_is_one_line_in_a_notebook():
    stop = TrainingInterrupted(7, 100, "runs/x/checkpoints/checkpoint-7", "runs/x")
    assert isinstance(stop, KeyboardInterrupt)
    assert stop._render_traceback_() == [
        "TrainingInterrupted: training stopped by Ctrl-C at step 7 of 100; checkpoint runs/x/checkpoints/checkpoint-7"]


def test_the_callback_ends_training_after_the_step_with_a_checkpoint():
    callback, args, control = StopOnInterrupt(), TrainingArguments(output_dir="unused", report_to="none"), None
    state = TrainerState(max_steps=10, global_step=3)
    control = TrainerControl()
    callback.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop and callback.stopped_at is None
    callback.requested = True  # what the SIGINT handler sets
    state.global_step = 4
    callback.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop and callback.stopped_at == 4


def test_describe_stop_reads_what_the_run_left(tmp_path):
    recorder = RunRecorder(tmp_path)
    recorder.write_config({"max_steps": 40})
    for step in (1, 2, 3):
        recorder.log_metrics(step, {"loss": 0.0})
    assert describe_stop(tmp_path) == {"step": 3, "max_steps": 40, "checkpoint": None}
    recorder.record_checkpoint(2, tmp_path / "checkpoints" / "checkpoint-2")
    assert describe_stop(tmp_path)["checkpoint"] == str(tmp_path / "checkpoints" / "checkpoint-2")
    recorder.write_summary(interrupted={"step": 3, "max_steps": 40, "checkpoint": "c3"})
    assert describe_stop(tmp_path) == {"step": 3, "max_steps": 40, "checkpoint": "c3"}


def test_ctrl_c_is_passed_on_to_a_kernel_in_its_own_session(tmp_path):
    # a stand-in kernel: a child in its own session (as jupyter_client starts kernels) that reports SIGINT
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: (print('interrupted', flush=True), sys.exit(0)))\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with forward_interrupts() as interrupts:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in this process: forwarded, not raised here
            assert child.wait(timeout=30) == 0 and child.stdout.readline().strip() == "interrupted"
        assert interrupts["count"] == 1
    finally:
        child.kill()
        child.wait()
    with pytest.raises(KeyboardInterrupt), forward_interrupts():  # no kernel running: stop here
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


@pytest.mark.slow
def test_ctrl_c_during_mmr1kit_run_stops_cleanly_with_the_report(qwen_path, counting_dir, tmp_path):
    run_dir = tmp_path / "run"
    notebook = ROOT / "notebooks" / "01_train_grpo.ipynb"
    command = [sys.executable, "-m", "mmr1kit.cli", "run", str(notebook), "--run-dir", str(run_dir),
               "-p", "model_name_or_path", str(qwen_path), "-p", "dataset", str(counting_dir),
               "-p", "warmstart_steps", "0", "-p", "eval_size", "1", "-p", "train_sample_size", "16",
               "-p", "max_steps", "40", "-p", "max_completion_length", "6"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 400
    while not (run_dir / "metrics.jsonl").is_file() or len(raw_steps(run_dir)) < 2:  # 2 GRPO steps: Ctrl-C
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # to the command only, as `kill -INT`; the kernel is in its own session
    stdout, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 130 and stdout == "", stderr[-3000:]
    for noise in ("Traceback", "zmq", "KeyboardInterrupt", "PapermillExecutionError"):
        assert noise not in stderr, stderr[-3000:]
    *_, line, report = stderr.splitlines()
    found = re.fullmatch(r"stopped at step (\d+) of 40 \(Ctrl-C\); resume with: (.+)", line)
    assert found, stderr[-2000:]
    step = int(found[1])
    assert found[2] == f"mmr1kit run {notebook} --run-dir {run_dir} --resume"
    assert report == f"report:   {run_dir / '01_train_grpo.html'}"
    html = (run_dir / "01_train_grpo.html").read_text()
    assert f"TrainingInterrupted: training stopped by Ctrl-C at step {step} of 40" in html
    assert "Traceback" not in html
    assert (run_dir / "checkpoints" / f"checkpoint-{step}" / "model.safetensors").is_file()
    assert raw_steps(run_dir) == list(range(1, step + 1))
