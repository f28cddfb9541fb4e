"""`python -m mmr1kit.train CONFIG.yaml [--field value ...]`: train from a preset, alone or under `accelerate launch`.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 8 \\
        -m mmr1kit.train configs/demo.yaml --run_dir runs/demo-8gpu --max_steps 300

It writes the same run folder as `notebooks/01_train_grpo.ipynb` (`mmr1kit.runs`): only the main process writes
records, and the rollouts of every process are gathered into them. The final model goes to `<run_dir>/final`.
`resume_from_checkpoint: true` (or `--resume_from_checkpoint true`) resumes from the latest `checkpoint-*` folder in
`output_dir` (default `<run_dir>/checkpoints`); `auto` does the same but starts afresh when there is none (for
preemptible jobs); a path resumes from that checkpoint. A resumed run takes its parameters from its `config.json`;
a given value that differs is refused unless `--allow_changes` names it. A folder that holds a run is refused unless
the run resumes it or `--overwrite_run_dir` moves it aside (`mmr1kit.run_folder`). Ctrl-C stops at the end of a step
with a checkpoint and prints the command that resumes (`mmr1kit.interrupt`). `docs/scale_out.md` has the launch
recipes; `python -m mmr1kit.train --help` the short usage.
"""

import logging
import shlex
import sys
from pathlib import Path

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.interrupt import TrainingInterrupted
from mmr1kit.models import resolve_model
from mmr1kit.plan import warn_if_unfit
from mmr1kit.run_folder import (  # resolve_resume, checkpoint_step: importable from here, as before
    check_resume_step,
    checkpoint_step,
    config_from_record,
    recorded_config,
    resolve_resume,
    resume_conflicts,
    resume_requested,
    run_record,
    start_run,
)
from mmr1kit.scale import check_pixel_bounds, check_vllm_server, vllm_server_url
from mmr1kit.trainer import MMR1Trainer

logger = logging.getLogger("mmr1kit.train")

USAGE = """usage: python -m mmr1kit.train [CONFIG.yaml] [--FIELD VALUE ...]

Train with GRPO into a run folder (the records notebooks/01_train_grpo.ipynb writes), in one process or under
`accelerate launch ... -m mmr1kit.train CONFIG.yaml` (docs/scale_out.md).

  CONFIG.yaml          a preset: a YAML mapping of MMR1Config fields (e.g. configs/tiny_counting.yaml)
  --FIELD VALUE        any MMR1Config field, over the preset's value; lists take several values
                       (--reward_funcs accuracy format), flags need none (--use_kl, --no_use_kl)

Often used:
  --run_dir DIR                       the run folder (default runs/default); one run per folder
  --max_steps N  --learning_rate LR  --per_device_train_batch_size B  --num_generations G
  --model_name_or_path PATH  --dataset CARD_OR_FILE  --reward_funcs NAME ...  --kl_approximator k1|k2|k3|exact
  --resume_from_checkpoint true|auto|PATH
                       continue the run in --run_dir with the parameters of its config.json
                       (auto: start afresh when it has no checkpoint yet, for preemptible jobs)
  --allow_changes FIELD ...           on resume, fields that may differ from the run's config.json
  --overwrite_run_dir                 move a run already in --run_dir aside to <run_dir>.old-<time>
  -h, --help                          this text; --help-fields lists every field with its help

Exit codes: 0 done; 1 training failed; 2 bad arguments (one line per problem, before anything loads);
130 stopped by Ctrl-C (at the end of a step, with a checkpoint; the command that resumes is printed)."""


def config_from_args(argv: list[str]) -> MMR1Config:
    """The run's config from `[PRESET.yaml] [--field value ...]`, checked; loads nothing.

    On resume (`resume_from_checkpoint` set and `<run_dir>/config.json` present) it is the run's recorded config,
    with the given values on top; a given value that differs from the record is refused unless `allow_changes`
    names it (one line per field).
    """
    from typing import get_type_hints

    from mmr1kit.config_checks import coerce

    values = MMR1Config.values_from_args(argv)
    run_dir = values.get("run_dir", MMR1Config.run_dir)
    recorded = recorded_config(run_dir) if resume_requested(values.get("resume_from_checkpoint")) else None
    if not recorded:
        return MMR1Config.from_dict(values)
    hints = get_type_hints(MMR1Config)
    given = {name: coerce(name, value, hints[name]) for name, value in values.items()}
    lines = resume_conflicts(recorded, given, given.get("allow_changes") or (), run_dir=run_dir, how="train")
    if lines:
        raise ValueError("\n".join(lines))
    return config_from_record(MMR1Config, recorded, given)


def peft_config_from(config):
    """A `peft.LoraConfig` when the config asks for LoRA (TRL's `ModelConfig` names: `use_peft`, `lora_r`,
    `lora_alpha`, `lora_dropout`, `lora_target_modules`), else None. The reference model is then the policy with its
    adapters disabled (TRL), not a second copy."""
    if not config.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def main(argv=None, *, reward_funcs=None, trainer_cls=MMR1Trainer) -> Path:
    """Train from `[PRESET.yaml] [--field value ...]`; return the run folder.

    Args:
        argv (`list[str]`, *optional*): Defaults to `sys.argv[1:]`.
        reward_funcs (*optional*): Reward functions instead of `config.reward_funcs` (for scripts that define their
            own, e.g. tests).
        trainer_cls (*optional*): An `MMR1Trainer` subclass.

    Raises:
        `ValueError`: bad arguments, a run folder that holds another run, a resume that contradicts the run's record
            (all before anything loads). `mmr1kit.interrupt.TrainingInterrupted`: Ctrl-C stopped training.
    """
    from mmr1kit.preflight import check_dataset

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    config = config_from_args(argv)  # validates every field and the layout; loads nothing
    warn_if_unfit(config)  # mmr1kit.plan: warns, with the numbers and what would fit, when GPU memory is too small
    check_dataset(config.dataset)
    if config.process_index == 0 or not config.overwrite_run_dir:  # only the main process moves an old run aside
        start_run(config, how="train")
    resume = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    check_resume_step(resume, config.max_steps, how="train")
    if config.use_vllm and config.vllm_mode == "server" and config.process_index == 0:
        check_vllm_server(vllm_server_url(config), timeout=config.vllm_server_timeout)
    with config.main_process_first(desc="tiny model and synthetic data"):  # built once, then read from the cache
        model = resolve_model(config.model_name_or_path)
        train_dataset = load_dataset(config.dataset, "train", config)
    check_pixel_bounds(config, model)
    trainer = trainer_cls(model=model, reward_funcs=reward_funcs, args=config, train_dataset=train_dataset,
                          peft_config=peft_config_from(config))
    if resume and trainer.recorder is not None:  # the records' tail after the checkpoint is dropped on train begin
        trainer.recorder.update_manifest(resumed_from=resume, resumed_at_step=checkpoint_step(resume))
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(Path(config.run_dir) / "final"))
    if trainer.accelerator.is_main_process:
        logger.info("run folder: %s", config.run_dir)
    return Path(config.run_dir)


def resume_command(run_dir, prog: str = "python -m mmr1kit.train") -> str:
    """The command that resumes the run in `run_dir` with its recorded parameters."""
    return f"{prog} --run_dir {shlex.quote(str(run_dir))} --resume_from_checkpoint true"


def cli(argv=None, *, prog: str = "python -m mmr1kit.train", **kwargs) -> int:
    """`main` for a terminal: a short `--help`, one line per bad argument (exit 2), one line on Ctrl-C (exit 130)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    if "--help-fields" in argv:
        from dataclasses import fields

        for f in fields(MMR1Config):
            if f.init and not f.name.startswith("_"):
                print(f"--{f.name}: {' '.join(str(f.metadata.get('help', '')).split())[:150]}")
        return 0
    try:
        main(argv, **kwargs)
    except TrainingInterrupted as stop:
        saved = f"; checkpoint {stop.checkpoint}" if stop.checkpoint else ""
        print(f"stopped at step {stop.step} of {stop.max_steps} (Ctrl-C){saved}; resume with: "
              f"{resume_command(stop.run_dir, prog)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        from mmr1kit.interrupt import describe_stop

        run_dir = MMR1Config.values_from_args(argv).get("run_dir", MMR1Config.run_dir)
        stop = describe_stop(run_dir) if Path(run_dir).is_dir() else {}
        if stop.get("checkpoint"):
            print(f"stopped by Ctrl-C after step {stop['step']}; resume with: {resume_command(run_dir, prog)} "
                  f"(from {stop['checkpoint']})", file=sys.stderr)
        elif run_record(run_dir):
            print("stopped by Ctrl-C before the first checkpoint: nothing to resume; start again with the same "
                  "command and --overwrite_run_dir", file=sys.stderr)
        else:
            print("stopped by Ctrl-C before training started", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
