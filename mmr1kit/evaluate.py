"""Evaluation: generate on a held-out split with the training prompts, score each example, aggregate per task.

Generation uses the dataset's own `prompt` column (built by `mmr1kit.data.load_dataset` from the same templates as
training), so evaluation and training see the same text. Greedy decoding by default; `num_samples > 1` samples
with `temperature` and reports pass@k.
"""

from dataclasses import dataclass

import pandas as pd
import torch


@dataclass
class EvalResult:
    """`records`: one row per (example, sample); `metrics`: aggregate figures of the task."""

    records: pd.DataFrame
    metrics: dict

    def __repr__(self):
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return f"EvalResult({len(self.records)} records: {shown})"


# task -> (reward used as the per-example score, name of the aggregate, threshold for "correct")
TASK_SCORES = {
    "counting": ("accuracy", "accuracy", 1.0),
    "math": ("math", "accuracy", 1.0),
    "grounding": ("iou", "mean_iou", 0.5),
    "ocr": ("anls", "anls", 0.5),
    "detection": ("detection", "f1", 1.0),
}


def _batches(n, size):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


@torch.no_grad()
def generate(model, processor, dataset, *, batch_size=64, max_new_tokens=16, do_sample=False, temperature=1.0,
             num_samples=1, seed=0) -> list[list[str]]:
    """Completions for every row: a list (rows) of lists (`num_samples` strings).

    Rows are rendered with the processor's chat template after TRL's `prepare_multimodal_messages` puts the image in
    the first user turn, exactly as `GRPOTrainer` does.
    """
    from trl.data_utils import prepare_multimodal_messages

    model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    outputs = []
    for idx in _batches(len(dataset), batch_size):
        rows = dataset.select(idx)
        conversations = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows]
        inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, padding=True, return_tensors="pt")
        inputs = inputs.to(model.device)
        generated = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=None,
            top_k=None,
            num_return_sequences=num_samples,
        )
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs += [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(rows))]
    return outputs


def evaluate(model_or_path, dataset, task: str = "counting", *, processor=None, batch_size=64, max_new_tokens=16,
             num_samples=1, temperature=1.0, seed=0, label=None) -> EvalResult:
    """Evaluate a model (or checkpoint path) on `dataset` for `task`.

    Args:
        model_or_path: A loaded model or a checkpoint folder / hub id.
        dataset: As returned by `mmr1kit.data.load_dataset` (columns `prompt`, `image`, `solution`, ...).
        task (`str`): A key of `TASK_SCORES`.
        num_samples (`int`): 1 = greedy; k > 1 = k samples at `temperature`, adds `pass@k`.
        label (`str`, *optional*): Stored in a `label` column (e.g. "warm start", "after GRPO").

    Returns:
        `EvalResult` with per-example `records` (`id`, `solution`, `completion`, `score`, `correct`, plus `count` for
        counting) and `metrics` (`accuracy` or the task's aggregate, `n`, and `pass@k` when sampling).
    """
    from mmr1kit.models import load_policy, load_processor
    from mmr1kit.rewards import REWARDS

    if task not in TASK_SCORES:
        raise ValueError(f"evaluate: task={task!r} is not one of {sorted(TASK_SCORES)}")
    model = load_policy(model_or_path, dtype=torch.float32) if isinstance(model_or_path, (str, bytes)) or hasattr(
        model_or_path, "__fspath__") else model_or_path
    if processor is None:
        processor = load_processor(model_or_path if not hasattr(model_or_path, "config") else model.name_or_path)
    completions = generate(model, processor, dataset, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           do_sample=num_samples > 1, temperature=temperature, num_samples=num_samples, seed=seed)
    reward_name, aggregate, threshold = TASK_SCORES[task]
    reward = REWARDS[reward_name]
    extra = [c for c in dataset.column_names if c not in ("prompt", "image", "solution")]
    records = []
    for i, row in enumerate(dataset.remove_columns(["image"])):
        samples = completions[i]
        kwargs = {k: [row[k]] * len(samples) for k in extra}
        scores = reward(completions=samples, solution=[row["solution"]] * len(samples), **kwargs)
        for j, (text, score) in enumerate(zip(samples, scores)):
            record = {"id": row["id"], "sample": j, "solution": row["solution"], "completion": text,
                      "score": float(score), "correct": bool(score >= threshold)}
            if "count" in row:
                record["count"] = row["count"]
            if label is not None:
                record["label"] = label
            records.append(record)
    df = pd.DataFrame(records)
    first = df[df["sample"] == 0]
    metrics = {"n": int(len(first)), aggregate: float(first["score"].mean()), "accuracy": float(first["correct"].mean())}
    if num_samples > 1:
        metrics[f"pass@{num_samples}"] = float(df.groupby("id")["correct"].any().mean())
    return EvalResult(records=df, metrics=metrics)


def accuracy_by(records: pd.DataFrame, column: str = "count") -> pd.DataFrame:
    """Accuracy and n per value of `column` (first sample of each example)."""
    first = records[records["sample"] == 0]
    return first.groupby(column)["correct"].agg(accuracy="mean", n="size").reset_index()
