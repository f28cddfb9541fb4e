"""`python -m mmr1kit.train CONFIG.yaml [--field value ...]`: train from a preset, alone or under `accelerate launch`.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 8 \\
        -m mmr1kit.train configs/demo.yaml --run_dir runs/demo-8gpu --max_steps 300

It writes the same run folder as `notebooks/01_train_grpo.ipynb` (`mmr1kit.runs`): only the main process writes
records, and the rollouts of every process are gathered into them. The final model goes to `<run_dir>/final`.
`resume_from_checkpoint: true` (or `--resume_from_checkpoint true`) resumes from the latest `checkpoint-*` folder in
`output_dir` (default `<run_dir>/checkpoints`); `auto` does the same but starts afresh when there is none (for
preemptible jobs); a path resumes from that checkpoint. `docs/scale_out.md` has the launch recipes.
"""

import json
import logging
import sys
from pathlib import Path

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.plan import warn_if_unfit
from mmr1kit.scale import check_pixel_bounds, check_vllm_server, vllm_server_url
from mmr1kit.trainer import MMR1Trainer, resolve_model

logger = logging.getLogger("mmr1kit.train")

TRUE = ("true", "yes", "1", "latest")
FALSE = ("", "false", "no", "0", "none")


def resolve_resume(value, output_dir) -> str | None:
    """`resume_from_checkpoint` as `Trainer.train` takes it: None, or the path of one checkpoint folder.

    `True` / `"true"` / `"latest"`: the latest `checkpoint-*` in `output_dir` (an error if there is none);
    `"auto"`: the same, or None when there is none; a path: that folder (an error if it is missing).
    """
    from transformers.trainer_utils import get_last_checkpoint

    text = str(value).strip().lower() if value is not None else ""
    if value is None or value is False or text in FALSE:
        return None
    latest = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
    if value is True or text in TRUE or text == "auto":
        if latest is None and text != "auto":
            raise ValueError(f"resume_from_checkpoint={value!r}: no checkpoint-* folder in {output_dir}; "
                             f"use 'auto' to start afresh when there is none, or name a checkpoint folder")
        return latest
    if not Path(value).is_dir():
        raise ValueError(f"resume_from_checkpoint={value!r}: no such checkpoint folder")
    return str(value)


def checkpoint_step(checkpoint) -> int:
    """The optimizer step a checkpoint folder was saved at (its `trainer_state.json`)."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


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
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    config = MMR1Config.from_args(argv)  # validates every field and the layout; loads nothing
    warn_if_unfit(config)  # mmr1kit.plan: warns, with the numbers and what would fit, when GPU memory is too small
    resume = resolve_resume(config.resume_from_checkpoint, config.output_dir)
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


if __name__ == "__main__":
    main()
