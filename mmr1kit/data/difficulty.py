"""Measure a dataset's difficulty as the starting model's failure rate, and store it for `order_dataset="curriculum"`.

MMR1 built its curriculum by sampling one answer per row from the base model, scoring it with the task's reward and
sorting by that score (MMR1's `inference/qwen2_vl_2b_groundingdata.py`, `9c86f29`). Here the difficulty is
`1 - pass rate` over `num_samples` samples, which is less noisy, and it is stored in the rows' `difficulty` field,
the field the curriculum sampler reads.
"""

import json
import os
from pathlib import Path


def measure_difficulty(model_or_path, dataset, task: str, *, num_samples: int = 4, temperature: float = 1.0,
                       batch_size: int = 64, max_new_tokens: int = 16, seed: int = 0, processor=None) -> dict:
    """Return `{row id: 1 - pass rate}` of the model on every row (sampling `num_samples` answers per row)."""
    from mmr1kit.evaluate import evaluate

    result = evaluate(model_or_path, dataset, task, processor=processor, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, num_samples=num_samples, temperature=temperature, seed=seed)
    pass_rate = result.records.groupby("id")["correct"].mean()
    return {str(i): round(1.0 - float(p), 6) for i, p in pass_rate.items()}


def store_difficulty(source, out, difficulty: dict) -> Path:
    """Write a copy of the MMR1 JSON / JSONL file `source` to `out` with each row's `difficulty` set.

    `out` must sit in the same folder as `source`, so that the rows' relative image paths stay valid. Rows whose id
    has no measured difficulty are an error, not a silent default.
    """
    source, out = Path(source), Path(out)
    if source.parent.resolve() != out.parent.resolve():
        raise ValueError(f"store_difficulty: write {out.name} next to {source} so relative image paths still resolve")
    text = source.read_text()
    jsonl = not text.lstrip().startswith("[")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if jsonl else json.loads(text)
    missing = [r.get("id") for r in rows if str(r.get("id")) not in difficulty]
    if missing:
        raise ValueError(f"store_difficulty: no measured difficulty for {len(missing)} rows, e.g. ids {missing[:5]}")
    for row in rows:
        row["difficulty"] = difficulty[str(row["id"])]
    body = "".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows, indent=1, sort_keys=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(body)
    os.replace(tmp, out)
    return out
