"""Numerical fault guard: a non-finite loss or gradient skips the optimizer step instead of writing NaN weights.

The check runs after the gradients are reduced across processes and clipped (`on_pre_optimizer_step`), so every
process takes the same decision. A skipped step drops the gradients (`p.grad = None`: torch optimizers leave such
parameters and their moments untouched), is counted in the metrics (`nonfinite/skipped_steps`) and its step number
is written to `summary.json`. After `max_nonfinite_steps` consecutive bad steps the run saves a checkpoint (of the
last finite weights) and stops; `MMR1Trainer.train` then raises `NonFiniteTrainingError` with what happened.
"""

import torch
from transformers import TrainerCallback


class NonFiniteTrainingError(RuntimeError):
    """Raised after a run stopped on consecutive non-finite steps (its last checkpoint has finite weights)."""


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, with one device-to-host sync (not one per tensor)."""
    if not tensors:
        return True
    device = tensors[0].device
    return bool(torch.stack([torch.isfinite(t).all().to(device) for t in tensors]).all())


class NonFiniteGuard(TrainerCallback):
    """Skip optimizer steps whose gradients are not finite; stop after `max_consecutive` in a row."""

    def __init__(self, trainer, max_consecutive: int):
        self.trainer = trainer
        self.max_consecutive = max_consecutive
        self.skipped: list[int] = []
        self.consecutive = 0
        self.stopped = False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        params = [p for p in self.trainer.model.parameters() if p.grad is not None]
        finite = all_finite([p.grad for p in params])
        step = state.global_step + 1
        metrics = self.trainer._metrics["train"]
        if finite:
            self.consecutive = 0
            metrics["nonfinite/skipped_steps"].append(len(self.skipped))
            return
        for p in params:
            p.grad = None
        self.skipped.append(step)
        self.consecutive += 1
        metrics["nonfinite/skipped_steps"].append(len(self.skipped))
        if self.trainer.recorder is not None:
            self.trainer.recorder.write_summary(**{"nonfinite/steps": self.skipped})
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True

    def message(self) -> str:
        return (
            f"training stopped at step {self.skipped[-1]} after {self.consecutive} consecutive steps with a non-finite "
            f"loss or gradient (skipped steps: {self.skipped}); the weights were never updated with them, and the "
            "last checkpoint in the run folder holds finite weights. Lower the learning rate, check the rewards for "
            "inf/NaN, or raise max_nonfinite_steps."
        )
