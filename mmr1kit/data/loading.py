"""Load MMR1-format datasets into TRL's conversational `prompt` + `image` columns.

One canonical row (design decision 3): `{"problem": str, "solution": str | number, "image": path}` plus optional
`id`, `task`, `difficulty` and any task fields (passed on to the reward functions). Sources: a JSON list or JSONL
file, a folder holding `<split>.json(l)`, a Hugging Face `datasets` folder (`save_to_disk`), or a data card in
`data_cards/` whose front matter says where the files are or how mmr1kit generates them.

Every row is checked when the dataset is loaded (fields, types, the image file's header), so a bad row fails at load
time with its file, row number, field and value, not at step 500. Image headers are read (cheap); pixels are
decoded lazily by `datasets.Image` when TRL asks for the row.
"""

import hashlib
import json
import random
import re
import textwrap
from collections import defaultdict
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from mmr1kit.data import templates
from mmr1kit.data.media import check_media, to_dataset

MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard: far above any VLM's max_pixels, far below a bomb
ON_BAD_EXAMPLE = ("error", "skip")


class DatasetError(ValueError):
    """A dataset row that cannot be used: names the file, the row (1-based), the field and the value."""

    def __init__(self, file, row, field, value, message):
        self.file, self.row, self.field, self.value, self.reason = str(file), row, field, value, message
        shown = repr(value)
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        where = f"{file}, row {row}" if row is not None else str(file)
        super().__init__(f"{where}, field {field!r} = {shown}: {message}")


def read_card(path) -> dict:
    """Return the YAML front matter of a data card (a Hugging Face dataset card)."""
    text = Path(path).read_text()
    if not text.startswith("---"):
        raise DatasetError(path, None, "front matter", text[:40], "a data card starts with '---' YAML front matter")
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError as e:
        raise DatasetError(path, None, "front matter", None, f"invalid YAML: {e}") from None
    return meta


def _card_files(card: Path, split: str) -> Path:
    """Resolve a card to the file of `split`, generating synthetic data into the cache when the card says so."""
    meta = read_card(card)
    spec = meta.get("mmr1kit") or {}
    configs = meta.get("configs") or [{}]
    data_files = configs[0].get("data_files") or {}
    if isinstance(data_files, list):
        data_files = {d["split"]: d["path"] for d in data_files}
    if split not in data_files:
        raise DatasetError(card, None, "split", split, f"the card lists splits {sorted(data_files)}")
    if "generator" in spec:
        from mmr1kit.models import cache_dir, cache_lock

        write_dataset = _generator(card, spec["generator"])

        params = {"task": spec["task"], **(spec.get("defaults") or {})}
        sizes = params.pop("sizes", {})
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        root = cache_dir() / "data" / f"{card.stem}-{key}"
        target = root / data_files[split]
        if not target.exists():
            with cache_lock(root):  # processes that start at once write it once
                if not target.exists():
                    seed = params.pop("seed", 0) + (0 if split == "train" else 1_000_003)
                    n = sizes.get(split, 256)
                    write_dataset(params.pop("task"), root, n=n, seed=seed, split=split, **params)
        return target
    root = Path(spec.get("data_dir", card.parent)).expanduser()
    if not (root / data_files[split]).exists():
        raise _not_downloaded(card, root, data_files, split)
    return root / data_files[split]


def _not_downloaded(card: Path, root: Path, data_files: dict, split: str) -> DatasetError:
    """The error for a card whose files are not there: which files, and the card's recipe for making them."""
    missing = [str(root / f) for f in data_files.values() if not (root / f).exists()]
    recipe = card_recipe(card)
    where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
    how = (f"make them with the recipe of the card (its 'Preprocessing' section):\n{textwrap.indent(recipe, '    ')}"
           if recipe else
           f"the card's 'Preprocessing' section says how to make them (converter: "
           f"{(read_card(card).get('mmr1kit') or {}).get('converter', 'not named')})")
    return DatasetError(card, None, "data_files", str(root / data_files[split]),
                        f"split {split!r} is not downloaded; {len(missing)} of the card's {len(data_files)} files "
                        f"are missing ({', '.join(missing)}){where}; {how}")


def card_recipe(card) -> str | None:
    """The first fenced code block of a data card's '## Preprocessing' section (how its files are made), if any."""
    text = Path(card).read_text()
    match = re.search(r"^## Preprocessing\s*$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    block = re.search(r"^```[\w-]*\n(.*?)^```", match.group(1), flags=re.MULTILINE | re.DOTALL) if match else None
    return block.group(1).rstrip() if block else None


GENERATORS = ("mmr1kit.data.synthetic.write_dataset",)


def _generator(card, name: str):
    """The `write_dataset` function a card names; only mmr1kit's own generators (a card never names code to run)."""
    import importlib

    if name not in GENERATORS:
        raise DatasetError(card, None, "mmr1kit.generator", name, f"expected one of {GENERATORS}")
    module, _, function = name.rpartition(".")
    return getattr(importlib.import_module(module), function)


def _resolve_source(path_or_card, split: str) -> Path:
    path = Path(path_or_card)
    if not path.exists():
        raise DatasetError(path, None, "dataset", str(path_or_card), "no such file, folder or data card")
    if path.suffix == ".md":
        return _card_files(path, split)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return path
        for ext in (".json", ".jsonl"):
            if (path / f"{split}{ext}").exists():
                return path / f"{split}{ext}"
        raise DatasetError(path, None, "split", split, f"expected {split}.json or {split}.jsonl in this folder")
    return path


def _read_rows(source: Path, split: str, bad: dict) -> list[tuple[int, dict]]:
    """Return (row number, row) pairs of a JSON / JSONL file or a `datasets` folder."""
    if source.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(source))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
        return [(i + 1, dict(r)) for i, r in enumerate(ds)]
    text = source.read_text(encoding="utf-8", errors="replace")
    if source.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(source, None, "json", text[max(0, e.pos - 20) : e.pos + 20], f"invalid JSON: {e}")
        return list(enumerate(rows, start=1))
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError as e:
            bad["invalid_json"].append(DatasetError(source, i, "json", line, f"invalid JSON line: {e.msg}"))
    return out


def _check_image(value, source: Path, row: int, root: Path):
    """Return (absolute path, width, height) of a row's image or raise `DatasetError` naming the path looked for."""
    if isinstance(value, Image.Image):  # a `datasets` folder with embedded images: already decoded
        if value.width * value.height == 0 or value.width * value.height > MAX_IMAGE_PIXELS:
            raise DatasetError(source, row, "image", value.size, "zero-size or oversized embedded image")
        return value, value.width, value.height
    if not isinstance(value, str) or not value:
        raise DatasetError(source, row, "image", value, "expected a path to an image file")
    # MMR1's own JSON files hold absolute paths, often outside the JSON's folder: any path to a readable image loads
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_file():
        raise DatasetError(source, row, "image", value, f"image file not found: looked for {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DatasetError(source, row, "image", value, f"{width}x{height} pixels exceeds {MAX_IMAGE_PIXELS}")
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(source, row, "image", value, f"not a readable image ({type(e).__name__}: {e})") from None
    if width == 0 or height == 0:
        raise DatasetError(source, row, "image", value, "zero-size image")
    return str(path), width, height


def _check_row(row, source: Path, i: int, root: Path, seen_ids: set) -> dict:
    if not isinstance(row, dict):
        raise DatasetError(source, i, "row", row, "each row must be a JSON object")
    for field in ("problem", "solution"):
        if field not in row:
            raise DatasetError(source, i, field, None, f"missing field (row has {sorted(row)})")
    problem = row["problem"]
    if not isinstance(problem, str) or not problem.strip():
        raise DatasetError(source, i, "problem", problem, "expected a non-empty string")
    solution = row["solution"]
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float, list, dict)):
        raise DatasetError(source, i, "solution", solution, "expected a string or a number")
    solution = solution if isinstance(solution, str) else json.dumps(solution)
    task = row.get("task")
    if task is not None:
        from mmr1kit.rewards import SOLUTION_VALIDATORS

        if task in SOLUTION_VALIDATORS:
            try:
                SOLUTION_VALIDATORS[task](solution)
            except ValueError as e:
                raise DatasetError(source, i, "solution", solution, f"invalid {task} solution: {e}") from None
    row_id = str(row.get("id", f"{source.stem}-{i}"))
    if row_id in seen_ids:
        raise DatasetError(source, i, "id", row_id, "duplicate id")
    seen_ids.add(row_id)
    media = check_media(row, source, i, root, _check_image)  # image, images or video (mmr1kit.data.media)
    return {**row, "id": row_id, "solution": solution, **media}


def load_dataset(
    path_or_card,
    split: str = "train",
    config=None,
    *,
    system_prompt_template: str | None = None,
    question_template: str | None = None,
    answer_template: str | None = None,
    train_sample_size: int | None = None,
    seed: int | None = None,
    on_bad_example: str | None = None,
    image_root: str | None = None,
):
    """Load an MMR1-format dataset as a `datasets.Dataset` ready for `GRPOTrainer`.

    Args:
        path_or_card: A JSON / JSONL file, a folder with `<split>.json(l)` or a `datasets` folder, or a data card.
        split (`str`, *optional*, defaults to `"train"`): The split to read.
        config (`MMR1Config`, *optional*): Supplies the templates, `train_sample_size`, `seed` and `on_bad_example`;
            explicit keyword arguments override it.
        train_sample_size (`int`, *optional*): For `split="train"` only: keep a seeded random subset of this many
            rows, in file order (MMR1 took the first N rows of the train split). Other splits are loaded whole.
        on_bad_example (`str`, *optional*, defaults to `"error"`): `"error"` raises `DatasetError` at the first bad
            row; `"skip"` drops bad rows and records them in the returned dataset's `bad_examples`.
        image_root (`str`, *optional*): Folder that relative image paths start from; defaults to the folder of the
            JSON file (or the `datasets` folder). Absolute paths are used as they are, wherever they point.

    Returns:
        `datasets.Dataset` with columns `prompt` (conversational messages), `image` (decoded lazily to PIL),
        `image_path`, `problem`, `solution` (answer template applied), `id`, `task`, `width`, `height` and every other
        field of the rows; rows with several images or a video add the columns of `mmr1kit.data.media`. Its
        `bad_examples` attribute maps a reason to a list of `(file, row, message)`.
    """

    def pick(name, value, default):
        if value is not None:
            return value
        return getattr(config, name, default) if config is not None else default

    system = templates.resolve("system_prompt_template", pick("system_prompt_template", system_prompt_template, "none"))
    question = templates.resolve("question_template", pick("question_template", question_template, "default"))
    answer = templates.resolve("answer_template", pick("answer_template", answer_template, "default"))
    sample_size = pick("train_sample_size", train_sample_size, None) if split == "train" else None
    seed = pick("seed", seed, 0)
    mode = pick("on_bad_example", on_bad_example, "error")
    if mode not in ON_BAD_EXAMPLE:
        raise ValueError(f"on_bad_example={mode!r} is not one of {ON_BAD_EXAMPLE}")

    source = _resolve_source(path_or_card, split)
    bad = defaultdict(list)
    raw = _read_rows(source, split, bad)
    root = Path(pick("image_root", image_root, None) or (source if source.is_dir() else source.parent)).expanduser()
    if not root.is_dir():
        raise DatasetError(source, None, "image_root", str(root), "no such folder (relative image paths start there)")
    rows, seen = [], set()
    for i, row in raw:
        try:
            rows.append(_check_row(row, source, i, root, seen))
        except DatasetError as e:
            bad[_reason(e)].append(e)
    if mode == "error" and bad:
        raise next(iter(bad.values()))[0]
    if not rows:
        raise DatasetError(source, None, "rows", len(raw), "no usable rows")
    if sample_size is not None and sample_size < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), sample_size))
        rows = [rows[k] for k in keep]

    columns = sorted({k for r in rows for k in r})
    data = {k: [r.get(k) for r in rows] for k in columns}
    data["image_path"] = [p if isinstance(p, str) else f"{source}#{i + 1}" for i, p in enumerate(data["image"])]
    data["task"] = data.get("task") or [None] * len(rows)
    data["solution"] = [answer.format(answer=s) for s in data["solution"]]
    data["prompt"] = [_messages(system, question.format(question=p)) for p in data["problem"]]
    ds = to_dataset(data, source)  # casts image / images, structures prompts with placeholders
    ds.bad_examples = {k: [(e.file, e.row, str(e)) for e in v] for k, v in bad.items()}
    return ds


def _reason(error: DatasetError) -> str:
    """A short, stable reason key for counting skipped rows (e.g. `missing_image`, `invalid_json`)."""
    if getattr(error, "kind", None):  # set by mmr1kit.data.media (images / video / placeholders)
        return error.kind
    if error.field == "json":
        return "invalid_json"
    if error.field == "image":
        return "missing_image" if "not found" in error.reason else "bad_image"
    if "missing field" in error.reason:
        return "missing_field"
    return f"bad_{error.field}"


def _messages(system: str, question: str) -> list[dict]:
    """TRL's conversational prompt; TRL inserts the image into the first user turn."""
    user = [{"role": "user", "content": question}]
    return ([{"role": "system", "content": system}] if system else []) + user
