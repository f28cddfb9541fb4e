"""The `MMR1Trainer`'s callbacks: the run record (`metrics.jsonl`, `summary.json`, checkpoints) and the sampling
temperature of each optimizer step (`temperature_func`)."""

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mmr1kit.run_folder import resume_requested
from mmr1kit.runs import RunRecorder
from mmr1kit.schedules import temperature_at


class TemperatureCallback(TrainerCallback):
    """Sets the sampling temperature of the coming optimizer step from `temperature_func` (logged as `temperature`).

    Optimizer steps are numbered `0 .. max_steps - 1` here (`state.global_step` before the step), and the schedule runs
    over `max_steps - 1` of them: the first step samples at `temperature_begin`, the last at `temperature_end`.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        t = temperature_at(
            args.temperature_func,
            state.global_step,
            max(state.max_steps - 1, 1),
            temperature=args.temperature,
            begin=args.temperature_begin,
            end=args.temperature_end,
        )
        self.trainer.set_temperature(t)


class RunRecordCallback(TrainerCallback):
    """Appends every logged step to `metrics.jsonl`; the trainer's final summary goes to `summary.json`.

    On a resumed run, rows that the dead process wrote after the checkpoint it resumes from (all of them when it
    left no checkpoint) are dropped first, so every step is in the records exactly once.
    """

    def __init__(self, recorder: RunRecorder):
        self.recorder = recorder

    def on_train_begin(self, args, state, control, **kwargs):
        resumed = state.global_step > 0 or resume_requested(args.resume_from_checkpoint)  # state loaded before this
        if state.is_world_process_zero and resumed:
            self.recorder.truncate_after(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = f"{args.output_dir}/{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            self.recorder.record_checkpoint(state.global_step, folder)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:
            self.recorder.write_summary(**{f"train/{k}": v for k, v in logs.items()})
        else:
            self.recorder.log_metrics(state.global_step, logs)
