"""Counting converters: R1-V's CLEVR (clevr_cogen_a_train), SuperCLEVR-200, CountBenchQA and PixMo-Count.

Every row gets `task="counting"`, `solution` = the count as a bare integer string (`"3"`, never
`"<answer> 3 </answer>"`, so MMR1's `r1v` answer template can wrap it without doubling the tags) and `count` (int),
so `mmr1kit.evaluate.accuracy_by(records, "count")` breaks accuracy down by true count. The published field names
each converter reads are listed in its docstring and in the dataset's card (`data_cards/`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmr1kit.data.converters_base import ConversionResult, Skipped, iter_source, read_json_rows, require, write_split
from mmr1kit.rewards.parsing import extract_answer, parse_number

PIXMO_QUESTION = "How many {label} are there in the image?"  # MMR1 local_scripts/data/pixmo-count.py


def _count(value) -> int | None:
    """A non-negative integer count from an int, a numeric string or `"<answer> N </answer>"`, else None."""
    number = parse_number(extract_answer(str(value))) if not isinstance(value, (int, float)) else float(value)
    return int(number) if number is not None and number >= 0 and number == int(number) else None


def _counting_row(row_id: str, problem, count) -> dict | Skipped:
    n = _count(count)
    if n is None:
        return Skipped("invalid_solution")
    if not isinstance(problem, str) or not problem.strip():
        return Skipped("empty_problem")
    return {"id": row_id, "task": "counting", "problem": problem.strip(), "solution": str(n), "count": n}


def _pairs(rows, make):
    for i, source_row in enumerate(rows):
        row, image = make(i, source_row)
        yield row if isinstance(row, Skipped) else (row, image)


def convert_clevr_cogen(source, out_dir, split: str = "train", *, task: str = "counting", limit=None,
                        min_side: int = 28) -> ConversionResult:
    """Convert R1-V's `leonardPKU/clevr_cogen_a_train` (CLEVR-CoGenT condition A counting, 70k rows).

    Published fields (parquet, `data/train-*.parquet`): `image` (`datasets.Image`; RGBA PNGs), `problem` (str,
    e.g. "How many items are there in the image?"), `solution` (str, `"<answer> 3 </answer>"`).

    The same R1-V layout is used by R1-V's other sets; `task="math"` keeps the solution's `<answer>` content as a
    math answer instead of a count (e.g. `leonardPKU/GEOQA_R1V_Train_8K`, layout not verified here).

    Args:
        source: A folder with the parquet shards, a `save_to_disk` folder, a parquet file, or the Hub id.
        out_dir: Output folder (`<out_dir>/<split>.json` + `images/<split>/`).
        split (`str`, *optional*, defaults to `"train"`): The only published split is `train`.
        task (`str`, *optional*, defaults to `"counting"`): `"counting"` or `"math"`.
        limit (`int`, *optional*): Keep the first `limit` usable rows.
        min_side (`int`, *optional*, defaults to `28`): Skip images with a smaller side.

    Returns:
        `ConversionResult`. Row ids are `clevr-<split>-<row index>`.
    """
    if task not in ("counting", "math"):
        raise ValueError(f"task={task!r}: expected 'counting' or 'math'")

    def make(i, row):
        require(row, ("image", "problem", "solution"), "clevr_cogen_a_train")
        if task == "counting":
            return _counting_row(f"clevr-{split}-{i}", row["problem"], row["solution"]), row["image"]
        answer = extract_answer(str(row["solution"]))
        return {"id": f"r1v-{split}-{i}", "task": "math", "problem": str(row["problem"]).strip(),
                "solution": answer}, row["image"]

    return write_split(_pairs(iter_source(source, split), make), out_dir, split, converter="clevr_cogen_a_train",
                       source=source, limit=limit, min_side=min_side)


def convert_superclevr(problems_jsonl, out_dir, split: str = "test", *, images_root=None, limit=None,
                       min_side: int = 28) -> ConversionResult:
    """Convert SuperCLEVR-200 as R1-V evaluates it (`src/eval/prompts/superclevr_test200_counting_problems.jsonl`).

    Published fields (one JSON object per line): `image_path` (str, e.g. `"./images/superCLEVR_new_025000.png"`,
    relative to the evaluation folder), `question` (str), `ground_truth` (int). MMR1's
    `eval/prompts/<task>_counting_problems.jsonl` files (PixMo-Count, CountBenchQA) use the same three fields.

    Args:
        problems_jsonl: The JSONL file.
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"test"`): Name of the written split.
        images_root (*optional*): Folder that `image_path` is relative to; defaults to the JSONL file's folder.
        limit, min_side: As in `convert_clevr_cogen`.

    Returns:
        `ConversionResult`; rows whose image file is missing are skipped (`missing_image`). Row ids are
        `superclevr-<image file stem>`.
    """
    root = Path(images_root) if images_root is not None else Path(problems_jsonl).parent

    def make(i, row):
        require(row, ("image_path", "question", "ground_truth"), str(problems_jsonl))
        image = root / row["image_path"]
        return _counting_row(f"superclevr-{Path(row['image_path']).stem}-{i}", row["question"],
                             row["ground_truth"]), image

    return write_split(_pairs(read_json_rows(problems_jsonl), make), out_dir, split, converter="superclevr",
                       source=problems_jsonl, limit=limit, min_side=min_side)


def convert_countbenchqa(source, out_dir, split: str = "test", *, limit=None, min_side: int = 28) -> ConversionResult:
    """Convert `vikhyatk/CountBenchQA` (491 of CountBench's 540 LAION images, one split `test`).

    Published fields (parquet, `data/test-*.parquet`): `image` (`datasets.Image`), `text` (the LAION caption),
    `question` (str, "How many ... are there in the image?"), `number` (int32, 2..10).

    Returns:
        `ConversionResult`; the caption is kept as `caption`. Row ids are `countbench-<row index>`.
    """

    def make(i, row):
        require(row, ("image", "question", "number"), "CountBenchQA")
        out = _counting_row(f"countbench-{i}", row["question"], row["number"])
        if not isinstance(out, Skipped):
            out["caption"] = row.get("text") or ""
        return out, row["image"]

    return write_split(_pairs(iter_source(source, split), make), out_dir, split, converter="countbenchqa",
                       source=source, limit=limit, min_side=min_side)


def convert_pixmo_count(source, out_dir, split: str = "validation", *, images_dir=None, check_sha256: bool = True,
                        limit=None, min_side: int = 28) -> ConversionResult:
    """Convert `allenai/pixmo-count` (train 36,916 rows; validation and test 540 each, counts 2..10).

    Published fields (parquet, `data/<split>-*.parquet`): `image_url` (str), `image_sha256` (str, hex),
    `count` (int32), `points` (list of `{"x", "y"}` in pixels; missing for the eval splits), `label` (str, the
    object name). Images are URLs, not bytes: download them first (MMR1's `pixmo-count.py` fetched `image_url` with
    32 threads and dropped failures) into `images_dir`, each named `<image_sha256>` with any extension (or a mirror
    with an `image` column may be given instead).

    Args:
        source: Parquet folder / file, `save_to_disk` folder or Hub id.
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"validation"`): `train`, `validation` or `test`.
        images_dir (*optional*): Folder of downloaded images named by SHA-256; required unless rows embed `image`.
        check_sha256 (`bool`, *optional*, defaults to `True`): Skip (`sha256_mismatch`) files whose SHA-256 differs
            from `image_sha256` (a changed or wrong download).
        limit, min_side: As in `convert_clevr_cogen`.

    Returns:
        `ConversionResult`. The problem is MMR1's `"How many {label} are there in the image?"`; `label` and
        `points` (`[[x, y], ...]` pixels, `[]` when missing) are kept. Missing downloads are skipped
        (`missing_image`). Row ids are `pixmo-<split>-<row index>`.
    """
    index = _index_by_stem(Path(images_dir)) if images_dir is not None else {}

    def make(i, row):
        require(row, ("image_sha256", "count", "label"), "pixmo-count")
        out = _counting_row(f"pixmo-{split}-{i}", PIXMO_QUESTION.format(label=row["label"]), row["count"])
        if isinstance(out, Skipped):
            return out, None
        out["label"] = row["label"]
        out["points"] = _points(row.get("points"))
        if row.get("image") is not None:
            return out, row["image"]
        path = index.get(str(row["image_sha256"]).lower())
        if path is None:
            return Skipped("missing_image"), None
        if check_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != str(row["image_sha256"]).lower():
            return Skipped("sha256_mismatch"), None
        return out, path

    return write_split(_pairs(iter_source(source, split), make), out_dir, split, converter="pixmo_count",
                       source=source, limit=limit, min_side=min_side)


def _points(points) -> list[list[float]]:
    """PixMo points as `[[x, y], ...]` from a dict of lists (how `datasets` stores a Sequence of a dict) or a list
    of `{"x", "y"}` dicts; `[]` when missing."""
    if isinstance(points, dict):
        return [[float(x), float(y)] for x, y in zip(points.get("x") or [], points.get("y") or [])]
    return [[float(p["x"]), float(p["y"])] for p in points or []]


def _index_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem.lower(): p for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
