"""Text-reading converter: TextVQA (`facebook/textvqa` and its parquet mirrors) into `task="ocr"` rows.

TextVQA asks questions whose answers are text in the image; each question has 10 crowd answers. The solution is the
JSON list of the distinct answers, most frequent first, which `mmr1kit.rewards.anls_reward` and
`mmr1kit.evaluate` score against every reference (ANLS takes the best). MMR1's own OCR set (books / arXiv page OCR,
50k, `ocr_data.py`) was never published; TextVQA is the public stand-in used by its successors' evaluations.
"""

from __future__ import annotations

import json
from collections import Counter

from mmr1kit.data.converters_base import ConversionResult, Skipped, iter_source, require, write_split


def reference_answers(answers) -> list[str]:
    """The distinct non-empty answers (whitespace-collapsed), most frequent first, ties in first-seen order."""
    cleaned = [" ".join(a.split()) for a in answers or [] if isinstance(a, str) and a.strip()]
    counts = Counter(cleaned)
    first = {a: i for i, a in reversed(list(enumerate(cleaned)))}
    return sorted(counts, key=lambda a: (-counts[a], first[a]))


def convert_textvqa(source, out_dir, split: str = "validation", *, limit=None, min_side: int = 28) -> ConversionResult:
    """Convert TextVQA (train 34,602 / validation 5,000 / test 5,734 questions over OpenImages photos).

    Published fields (`facebook/textvqa` dataset card; also the parquet mirrors such as `lmms-lab/textvqa`):
    `image_id` (str), `question_id` (int32), `question` (str), `question_tokens`, `image` (`datasets.Image`),
    `image_width`, `image_height` (int32), `flickr_original_url`, `flickr_300k_url`, `answers` (10 str; empty strings
    in the test split), `image_classes`, `set_name`.

    Args:
        source: Parquet folder / file, `save_to_disk` folder or Hub id.
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"validation"`): `train`, `validation` (or `test`, which has no answers:
            every row is skipped as `no_answer`).
        limit, min_side: Keep the first `limit` usable rows; skip images with a side under `min_side` px.

    Returns:
        `ConversionResult`. Row: `problem` = the question, `solution` = JSON list of reference answers (see
        `reference_answers`), `answer` = the most frequent one, `num_answers`, `image_id`. Ids:
        `textvqa-<split>-<question_id>`.
    """

    def examples():
        for i, row in enumerate(iter_source(source, split)):
            require(row, ("image", "question", "answers"), "textvqa")
            refs = reference_answers(row["answers"])
            if not refs:
                yield Skipped("no_answer")
                continue
            if not str(row["question"]).strip():
                yield Skipped("empty_problem")
                continue
            yield {
                "id": f"textvqa-{split}-{row.get('question_id', i)}",
                "task": "ocr",
                "problem": str(row["question"]).strip(),
                "solution": json.dumps(refs),
                "answer": refs[0],
                "num_answers": len([a for a in row["answers"] if isinstance(a, str) and a.strip()]),
                "image_id": str(row.get("image_id", "")),
            }, row["image"]

    return write_split(examples(), out_dir, split, converter="textvqa", source=source, limit=limit, min_side=min_side)
