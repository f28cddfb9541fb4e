"""Math benchmark converters: MathVista (testmini), MathVerse (testmini, one problem version) and Geometry3K.

Every row gets `task="math"` and `solution` = the gold answer in the form the protocols compare
(`mmr1kit.extractors.math_match`): the **letter** of the gold choice for a multiple-choice row (MathVista stores the
choice text; MathVerse the letter), the value otherwise. `problem` is the text the benchmark's protocol puts in the
user turn (MathVista's `query`, MathVerse's `query_cot` by default, Geometry3K's `problem` with its `<image>`
placeholder); the raw question is kept as `question`. The fields the matcher reads (`choices`, `question_type`,
`answer_type`, `precision`) are kept; the rest of the metadata is flattened into plain columns for breakdowns.

Rows are skipped, and counted in `conversion.json`, when the gold answer is not among the choices
(`answer_not_in_choices`), when math_verify cannot parse it (`invalid_solution`), when the image is missing or too
small (`missing_image`, `small_image`), when a Geometry3K row has other than one image (`image_count`), and, for
MathVerse, when the row is another problem version (`other_version`). A benchmark number over fewer rows than the
card's `splits` is not the paper's number.
"""

from __future__ import annotations

from pathlib import Path

from mmr1kit.data.converters_base import ConversionResult, Skipped, iter_source, read_json_rows, require, write_split

MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")


def _letter(answer, choices) -> str | None:
    """The letter of `answer` among `choices` (`A` for the first), or `None` when it is not one of them."""
    choices = [str(c) for c in choices or []]
    return chr(ord("A") + choices.index(str(answer))) if str(answer) in choices else None


def _images_root(source, images_root) -> Path:
    """Where relative image paths start: `images_root`, else the source folder (or the source file's folder)."""
    if images_root is not None:
        return Path(images_root)
    return Path(source) if Path(source).is_dir() else Path(source).parent


def _pairs(rows, make):
    for i, source_row in enumerate(rows):
        row, image = make(i, source_row)
        yield row if isinstance(row, Skipped) else (row, image)


def convert_mathvista(source, out_dir, split: str = "testmini", *, images_root=None, limit=None,
                      min_side: int = 28) -> ConversionResult:
    """Convert `AI4Math/MathVista` (testmini: 1,000 problems, 540 multiple choice; test: 5,141 without answers).

    Published fields (parquet, `data/<split>-*.parquet`): `pid`, `question`, `image` (a path, `images/<pid>.jpg`),
    `decoded_image` (`datasets.Image`), `choices` (list of str or null), `unit`, `precision` (float or null),
    `answer`, `question_type` (`multi_choice` / `free_form`), `answer_type` (`text` / `integer` / `float` / `list`),
    `metadata` (`category`, `context`, `grade`, `img_height`, `img_width`, `language`, `skills`, `source`, `split`,
    `task`) and `query` (the official prompt: hint, question and choices).

    Args:
        source: The parquet folder, a parquet / JSON(L) file of such rows, or the Hub id.
        out_dir: Output folder (`<out_dir>/<split>.json` + `images/<split>/`).
        split (`str`, *optional*, defaults to `"testmini"`): `testmini` (the `test` answers are not public).
        images_root (*optional*): Folder `image` is relative to, for rows without `decoded_image` (default: the
            source folder, where the Hub's `images.zip` unpacks to `images/`).
        limit, min_side: As in `mmr1kit.data.converters.convert_clevr_cogen`.

    Returns:
        `ConversionResult`. Row ids are `mathvista-<pid>`; `problem` is `query`; `solution` is the choice letter
        (multiple choice) or `answer`; `answer_text` is the published `answer`.
    """

    root = _images_root(source, images_root)

    def make(i, row):
        require(row, ("pid", "question", "answer", "question_type", "answer_type", "query"), "MathVista")
        meta = row.get("metadata") or {}
        choices = list(row.get("choices") or [])
        solution = str(row["answer"])
        if row["question_type"] == "multi_choice":
            solution = _letter(row["answer"], choices)
            if solution is None:
                return Skipped("answer_not_in_choices"), None
        out = {"id": f"mathvista-{row['pid']}", "task": "math", "problem": row["query"], "question": row["question"],
               "solution": solution, "answer_text": str(row["answer"]), "choices": choices or None,
               "unit": row.get("unit"), "precision": row.get("precision"), "question_type": row["question_type"],
               "answer_type": row["answer_type"], "pid": str(row["pid"]), "category": meta.get("category"),
               "context": meta.get("context"), "grade": meta.get("grade"), "language": meta.get("language"),
               "skills": list(meta.get("skills") or []), "source_dataset": meta.get("source"),
               "subtask": meta.get("task")}
        image = row.get("decoded_image")
        if image is None and row.get("image"):
            image = root / row["image"]
        return out, image

    return write_split(_pairs(iter_source(source, split), make), out_dir, split, converter="mathvista",
                       source=source, limit=limit, min_side=min_side)


def _mathverse_rows(source, split: str):
    """Rows of MathVerse's `<split>.parquet` (Hub layout, file at the repository root) or `<split>.json` (GitHub)."""
    path = Path(source)
    for name in (f"{split}.parquet", f"{split}.json"):
        if path.is_dir() and (path / name).exists():
            path = path / name
            break
    if path.suffix == ".json":
        return read_json_rows(path)
    return iter_source(path, split)


def convert_mathverse(source, out_dir, split: str = "testmini", *, version: str = "Vision Only",
                      query: str = "query_cot", images_root=None, limit=None, min_side: int = 28) -> ConversionResult:
    """Convert one problem version of `AI4Math/MathVerse` testmini (788 problems in each of five versions).

    Published fields (`testmini.parquet` at the Hub repository's root, or the GitHub `data/testmini.json`):
    `sample_index`, `problem_index`, `problem_version` (`Text Dominant`, `Text Lite`, `Vision Intensive`,
    `Vision Dominant`, `Vision Only`), `question` (empty for Vision Only: the question is in the image), `image`
    (`datasets.Image`; in the JSON a path such as `images_version_6/image_685.png`), `answer` (a letter for
    multiple choice), `question_type` (`multi-choice` / `free-form`), `metadata` (`split`, `source`, `subject`,
    `subfield`), `query_wo` (direct-answer prompt) and `query_cot` (reasoning prompt).

    Args:
        source: The Hub folder (with `<split>.parquet`), the parquet or JSON file, or the Hub id.
        version (`str`, *optional*, defaults to `"Vision Only"`): The problem version kept (one of
            `MATHVERSE_VERSIONS`); other rows are counted as `other_version`.
        query (`str`, *optional*, defaults to `"query_cot"`): The field used as `problem` (`query_wo` for the
            direct-answer prompt).
        images_root (*optional*): Folder JSON image paths are relative to (default: the JSON file's folder).

    Returns:
        `ConversionResult`. Row ids are `mathverse-<sample_index>`; `question_type` is `multi_choice` or
        `free_form` (MathVista's spelling, which `mmr1kit.extractors` reads).
    """
    if version not in MATHVERSE_VERSIONS:
        raise ValueError(f"version={version!r} is not one of {', '.join(MATHVERSE_VERSIONS)}")
    if query not in ("query_cot", "query_wo"):
        raise ValueError(f"query={query!r}: expected 'query_cot' or 'query_wo'")
    root = _images_root(source, images_root)

    def make(i, row):
        require(row, ("sample_index", "problem_version", "question", "image", "answer", "question_type", query),
                "MathVerse")
        if row["problem_version"] != version:
            return Skipped("other_version"), None
        meta = row.get("metadata") or {}
        multi = row["question_type"] == "multi-choice"
        out = {"id": f"mathverse-{row['sample_index']}", "task": "math", "problem": row[query],
               "question": row["question"], "solution": str(row["answer"]).strip(),
               "question_type": "multi_choice" if multi else "free_form", "problem_version": version,
               "problem_index": str(row.get("problem_index")), "subject": meta.get("subject"),
               "subfield": meta.get("subfield"), "source_dataset": meta.get("source")}
        image = row["image"]
        return out, root / image if isinstance(image, str) else image

    return write_split(_pairs(_mathverse_rows(source, split), make), out_dir, split, converter="mathverse",
                       source=source, limit=limit, min_side=min_side)


def convert_geometry3k(source, out_dir, split: str = "test", *, limit=None, min_side: int = 28) -> ConversionResult:
    """Convert `hiyouga/geometry3k` (Geometry3K from InterGPS: train 2,101, validation 300, test 601), the layout
    EasyR1 trains and validates on.

    Published fields (parquet, `data/<split>-*.parquet`): `images` (list of `datasets.Image`, one diagram),
    `problem` (str, with an `<image>` placeholder), `answer` (str, the value), `id` (int64), `choices` (list of str)
    and `ground_truth` (str).

    Returns:
        `ConversionResult`. Row ids are `geometry3k-<split>-<id>`; `solution` is `answer` (a letter answer to a
        row with choices is mapped to its choice by the matcher); `choices` and `ground_truth` are kept.
    """

    def make(i, row):
        require(row, ("images", "problem", "answer"), "Geometry3K")
        images = list(row["images"] or [])
        if len(images) != 1:
            return Skipped("image_count"), None
        out = {"id": f"geometry3k-{split}-{row.get('id', i)}", "task": "math", "problem": str(row["problem"]),
               "solution": str(row["answer"]).strip(), "choices": list(row.get("choices") or []) or None,
               "ground_truth": row.get("ground_truth")}
        return out, images[0]

    return write_split(_pairs(iter_source(source, split), make), out_dir, split, converter="geometry3k",
                       source=source, limit=limit, min_side=min_side)
