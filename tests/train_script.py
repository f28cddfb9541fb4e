"""`python tests/train_script.py PRESET.yaml [--field value ...]`: `python -m mmr1kit.train` with a graded test reward.

A random tiny model scores 0 on every task reward, which would leave nothing to compare; this length reward varies.
With MMR1KIT_TEST_SIGKILL_AT_STEP=N the process kills itself with SIGKILL right after step N is recorded, a
deterministic stand-in for a preemption at that moment (the kill itself is real).
"""

import os
import signal
import sys

from transformers import TrainerCallback

from mmr1kit.train import cli
from mmr1kit.trainer import MMR1Trainer


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and logs and "loss" in logs:
            os.kill(os.getpid(), signal.SIGKILL)


class Trainer(MMR1Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kill_at = os.environ.get("MMR1KIT_TEST_SIGKILL_AT_STEP")
        if kill_at:
            self.add_callback(KillAt(int(kill_at)))  # after the run recorder: the step's records are written first


if __name__ == "__main__":  # as `python -m mmr1kit.train`: one line on Ctrl-C with the command that resumes
    sys.exit(cli(sys.argv[1:], prog=f"python {__file__}", reward_funcs=[length_reward], trainer_cls=Trainer))
