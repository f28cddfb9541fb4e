"""Supervised warm start (TRL's `SFTTrainer`) before GRPO, optionally on labels from a deliberately biased annotator.

Why the bias: after an ordinary warm start a tiny VLM already answers its best guess, and GRPO with a verifiable
reward has nothing to correct (docs/demo.md, finding 1). Real VLMs keep systematic errors from
imitation, undercounting many objects being a known one. The demo reproduces that structure on purpose: it
warm-starts on an annotator that undercounts 3+ objects with probability 0.8, then GRPO on the true counts.
"""

from pathlib import Path

import torch


def answer_target(solution: str) -> str:
    """The demonstration an SFT example imitates: the answer in MMR1's answer tags."""
    return f"<answer>{solution}</answer>"


def sft_dataset(dataset, labels: list[str] | None = None):
    """TRL prompt-completion rows from an `mmr1kit.data.load_dataset` dataset.

    Args:
        dataset: Rows with `prompt`, `image` (or `images`: several per row) and `solution`.
        labels (`list[str]`, *optional*): Replacement answers (e.g. a biased annotator's); defaults to `solution`.
    """
    labels = list(dataset["solution"]) if labels is None else labels
    if len(labels) != len(dataset):
        raise ValueError(f"sft_dataset: {len(labels)} labels for {len(dataset)} rows")
    if "video" in dataset.column_names:
        raise ValueError("sft_dataset: TRL's SFTTrainer takes no video rows; warm-start on image rows, or skip the "
                         "warm start (warmstart_steps=0) for a video data set")
    completions = [[{"role": "assistant", "content": answer_target(label)}] for label in labels]
    media = "images" if "images" in dataset.column_names else "image"  # every image of a multi-image row
    keep = [c for c in dataset.column_names if c not in ("prompt", media)]
    return dataset.remove_columns(keep).add_column("completion", completions)


def checkpointing_off(config_class) -> dict:
    """The keyword that turns activation checkpointing off: `activation_checkpointing` where transformers has it
    (5.23; the old name, `gradient_checkpointing`, warns there), `gradient_checkpointing` before (5.17)."""
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}
    return {"activation_checkpointing": False} if "activation_checkpointing" in names else {"gradient_checkpointing": False}


def warm_start(
    model_path,
    dataset,
    out_dir,
    *,
    labels: list[str] | None = None,
    max_steps: int = 600,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    warmup_steps: int = 20,
    seed: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    callbacks=None,
) -> Path:
    """Fine-tune `model_path` on (prompt, image) → `<answer>label</answer>` with `SFTTrainer`; save to `out_dir`.

    The loss covers only the completion tokens (TRL's default for prompt-completion data). The hyperparameters
    default to the recipe measured for docs/demo.md (AdamW, betas 0.9/0.98, constant LR after a
    warm-up, gradient clipping at 1).

    Returns:
        `Path`: `out_dir`, a checkpoint folder that `MMR1Trainer` (and its reference model) load from disk.
    """
    from trl import SFTConfig, SFTTrainer

    from mmr1kit.models import load_policy, load_processor
    from mmr1kit.progress import use_text_progress

    out_dir = Path(out_dir)
    processor = load_processor(model_path, min_pixels, max_pixels)
    config = SFTConfig(
        output_dir=str(out_dir / "sft-trainer"),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=warmup_steps,
        adam_beta2=0.98,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=seed,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        **checkpointing_off(SFTConfig),
        logging_steps=max(1, max_steps // 20),
        save_strategy="no",
        report_to="none",
        max_length=None,  # never truncate: it could cut image tokens
        remove_unused_columns=False,
        dataloader_drop_last=True,
    )
    trainer = SFTTrainer(
        model=load_policy(model_path, dtype=torch.float32),
        args=config,
        train_dataset=sft_dataset(dataset, labels),
        processing_class=processor,
        callbacks=callbacks,
    )
    use_text_progress(trainer, "warm start")
    trainer.train()
    trainer.model.generation_config.do_sample = True
    trainer.save_model(str(out_dir))
    processor.save_pretrained(str(out_dir))
    return out_dir
