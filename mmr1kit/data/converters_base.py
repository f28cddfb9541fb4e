"""Shared machinery of the dataset converters: read a published layout, store images, write MMR1 JSON rows.

A converter turns a public dataset, in the layout its authors publish, into mmr1kit's canonical rows:

    <out_dir>/<split>.json                  a JSON list of rows (`json.dumps(rows, indent=1, sort_keys=True)`)
    <out_dir>/images/<split>/<name>         the images the rows point at (paths relative to `<out_dir>`)
    <out_dir>/conversion.json               per split: converter, source, rows written, rows skipped by reason

Every row has `id`, `task` (so `mmr1kit.data.load_dataset` validates its `solution` with
`mmr1kit.rewards.SOLUTION_VALIDATORS`), `problem`, `solution`, `image`, `image_width`, `image_height`, `source`
and the task's own fields. The output folder is what `load_dataset(out_dir, split)` and a data card's
`mmr1kit.data_dir` expect.

Sources (`iter_source`): a Hugging Face `datasets` folder written by `save_to_disk`, a folder of parquet files as
published on the Hub (`data/<split>-00000-of-00001.parquet` or `<config>/<split>/0000.parquet`), one parquet file,
a JSON / JSONL file, or a Hub id (downloaded by `datasets.load_dataset`, so it needs the network). Parquet files
are read with pyarrow in batches (nothing is written to the `datasets` cache). Image columns arrive as the
`datasets.Image` storage struct `{"bytes": ..., "path": ...}` and are stored byte for byte (no re-encoding).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmr1kit.rewards.parsing import BOX_CONVENTIONS, check_convention

MIN_SIDE = 28  # Qwen2-VL / Qwen2.5-VL processors reject images with a side under 28 px (MMR1's prep dropped them)
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass(frozen=True)
class Skipped:
    """Yielded by a converter's row generator instead of a row: the source row is dropped for `reason`."""

    reason: str


@dataclass
class ConversionResult:
    """What a converter wrote: the JSON file, the number of rows and images, and the skipped rows by reason."""

    path: Path
    rows: int
    images: int
    skipped: dict[str, int] = field(default_factory=dict)


class SkipRow(Exception):
    """Raised inside the writer when a row's image is unusable; the row is counted under `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------------------
# Reading published layouts
# --------------------------------------------------------------------------------------------------------------


def parquet_files(folder: Path, split: str) -> list[Path]:
    """The parquet shards of `split` under `folder`: `**/<split>-*.parquet` or `**/<split>/*.parquet`, sorted."""
    files = set(folder.rglob(f"{split}-*.parquet")) | set(folder.rglob(f"{split}/*.parquet"))
    return sorted(files)


def iter_source(source, split: str, columns: Iterable[str] | None = None) -> Iterator[dict]:
    """Yield the rows (dicts) of `split` of a published dataset, images as `{"bytes", "path"}` structs.

    Args:
        source (`str` or `os.PathLike`): A `save_to_disk` folder, a folder of parquet shards, a `.parquet` file,
            a `.json` / `.jsonl` file, or a Hugging Face Hub id (needs the network).
        split (`str`): The split to read (ignored for a single file).
        columns (`Iterable[str]`, *optional*): Read only these columns (parquet); missing ones raise `ValueError`.

    Raises:
        ValueError: No parquet shard of `split` in a folder, or a requested column is missing (the message lists
            the columns the source has).
    """
    path = Path(source)
    columns = list(columns) if columns is not None else None
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        yield from _iter_datasets(_load_from_disk(path, split), columns, path)
    elif path.is_dir():
        files = parquet_files(path, split)
        if not files:
            raise ValueError(f"{path}: no parquet file for split {split!r} (looked for **/{split}-*.parquet and "
                             f"**/{split}/*.parquet), and no save_to_disk folder (dataset_dict.json / state.json)")
        for f in files:
            yield from _iter_parquet(f, columns)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path, columns)
    elif path.suffix in (".json", ".jsonl"):
        yield from read_json_rows(path)
    elif path.exists():
        raise ValueError(f"{path}: expected a folder, a .parquet, .json or .jsonl file")
    else:
        import datasets

        yield from _iter_datasets(datasets.load_dataset(str(source), split=split), columns, source)


def _load_from_disk(path: Path, split: str):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r}; the folder has {sorted(ds)}")
        ds = ds[split]
    return ds


def _iter_datasets(ds, columns, where) -> Iterator[dict]:
    import datasets

    _check_columns(ds.column_names, columns, where)
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    if columns is not None:
        ds = ds.select_columns(columns)
    yield from ds


def _iter_parquet(path: Path, columns) -> Iterator[dict]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(parquet.schema_arrow.names, columns, path)
    for batch in parquet.iter_batches(batch_size=256, columns=columns):
        yield from batch.to_pylist()


def _check_columns(available, wanted, where) -> None:
    missing = [c for c in wanted or () if c not in available]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; the source has {sorted(available)}")


def read_json_rows(path) -> list[dict]:
    """Rows of a JSON list file or a JSONL file (blank lines ignored)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def require(row: dict, names: Iterable[str], where: str) -> None:
    """Raise `ValueError` naming the missing fields of a source row (a layout other than the documented one)."""
    missing = [n for n in names if n not in row]
    if missing:
        raise ValueError(f"{where}: source row has no field(s) {missing} (it has {sorted(row)}); "
                         "is this the published layout the data card documents?")


# --------------------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------------------


def xywh_to_xyxy(box) -> list[float]:
    """COCO `[x, y, width, height]` (top-left corner and size, pixels) → `[x1, y1, x2, y2]` (pixels)."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def clip_box(box, width: float, height: float) -> list[float] | None:
    """`[x1, y1, x2, y2]` clipped to the image, or `None` if nothing of positive area is left."""
    x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def encode_box(box, convention: str, width: float, height: float) -> list:
    """A pixel `[x1, y1, x2, y2]` box written in `convention` (see `mmr1kit.rewards.parsing`).

    - `"pixel"`: pixels, rounded to 2 decimals (COCO stores 2);
    - `"qwen2vl_1000"`: `round(1000 * x / width)` and `round(1000 * y / height)`, integers in 0..1000;
    - `"relative"`: `x / width`, `y / height`, rounded to 4 decimals.
    """
    check_convention(convention)
    if convention == "pixel":
        return [round(float(v), 2) for v in box]
    scale = 1000.0 if convention == "qwen2vl_1000" else 1.0
    values = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
    if convention == "qwen2vl_1000":
        return [min(1000, max(0, round(v * scale))) for v in values]
    return [round(v, 4) for v in values]


# --------------------------------------------------------------------------------------------------------------
# Images and rows
# --------------------------------------------------------------------------------------------------------------


class ImageStore:
    """Stores the images of one split under `<out_dir>/images/<split>/` and returns their relative paths.

    Embedded images (bytes) are written byte for byte and named by the first 16 hex digits of their SHA-256, so an
    image shared by many rows (RefCOCO, TextVQA) is stored once. Image files (COCO, SuperCLEVR) keep their file
    name and are hard-linked when the filesystem allows it, else copied. Images PIL cannot read, or with a side
    under `min_side` px, raise `SkipRow`.
    """

    def __init__(self, out_dir: Path, split: str, min_side: int = MIN_SIDE):
        self.out_dir, self.min_side = Path(out_dir), min_side
        self.folder = self.out_dir / "images" / split
        self.sizes: dict[str, tuple[int, int]] = {}

    def _probe(self, data: bytes | Path) -> tuple[str, int, int]:
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                fmt, (width, height) = im.format, im.size
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
            raise SkipRow("unreadable_image") from None
        if min(width, height) < self.min_side:
            raise SkipRow("small_image")
        return fmt, width, height

    def add(self, image) -> tuple[str, int, int]:
        """Store `image` (bytes, a path, or a `{"bytes", "path"}` struct); return `(relative path, width, height)`."""
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        if image is None:
            raise SkipRow("missing_image")
        if isinstance(image, (bytes, bytearray)):
            return self._add_bytes(bytes(image))
        return self._add_file(Path(image))

    def _add_bytes(self, data: bytes) -> tuple[str, int, int]:
        digest = hashlib.sha256(data).hexdigest()[:16]
        if digest in self.sizes:
            return self._relative(self.sizes[digest][2]), *self.sizes[digest][:2]
        fmt, width, height = self._probe(data)
        name = digest + IMAGE_FORMATS.get(fmt, ".img")
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        if not target.exists():
            tmp = target.with_name(f".{name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        self.sizes[digest] = (width, height, name)
        return self._relative(name), width, height

    def _add_file(self, path: Path) -> tuple[str, int, int]:
        if not path.is_file():
            raise SkipRow("missing_image")
        key = str(path.resolve())
        if key in self.sizes:
            return self._relative(self.sizes[key][2]), *self.sizes[key][:2]
        _, width, height = self._probe(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(path, target)
        self.sizes[key] = (width, height, path.name)
        return self._relative(path.name), width, height

    def _relative(self, name: str) -> str:
        return (self.folder / name).relative_to(self.out_dir).as_posix()


def write_split(
    examples: Iterable[tuple[dict, object] | Skipped],
    out_dir,
    split: str,
    *,
    converter: str,
    source,
    limit: int | None = None,
    min_side: int = MIN_SIDE,
) -> ConversionResult:
    """Write the rows yielded by `examples` to `<out_dir>/<split>.json`, storing their images.

    Args:
        examples: `(row, image)` pairs (the row without `image`; `image` as for `ImageStore.add`) or `Skipped`.
        out_dir (`str` or `os.PathLike`): The output folder.
        split (`str`): The split name used for the file and the image folder.
        converter (`str`): Recorded in each row's `source` and in `conversion.json`.
        source: The source path or Hub id, recorded in `conversion.json`.
        limit (`int`, *optional*): Stop after this many rows (a quick subset; skipped rows do not count).
        min_side (`int`, *optional*, defaults to `28`): Images with a smaller side are skipped (`small_image`).

    Raises:
        ValueError: Two rows have the same `id`, or a row lacks `id` / `task` / `problem` / `solution`.
    """
    from mmr1kit.rewards import SOLUTION_VALIDATORS

    out_dir = Path(out_dir)
    store, rows, skipped, seen = ImageStore(out_dir, split, min_side), [], Counter(), set()
    for example in examples:
        if limit is not None and len(rows) >= limit:
            break
        if isinstance(example, Skipped):
            skipped[example.reason] += 1
            continue
        row, image = example
        require(row, ("id", "task", "problem", "solution"), f"{converter} row")
        if row["id"] in seen:
            raise ValueError(f"{converter}: duplicate row id {row['id']!r} in split {split!r}")
        try:
            SOLUTION_VALIDATORS[row["task"]](row["solution"])
            path, width, height = store.add(image)
        except ValueError:
            skipped["invalid_solution"] += 1
            continue
        except SkipRow as e:
            skipped[e.reason] += 1
            continue
        seen.add(row["id"])
        rows.append({**row, "image": path, "image_width": width, "image_height": height, "source": converter})
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{split}.json"
    _write_text(json_path, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    result = ConversionResult(json_path, len(rows), len({r["image"] for r in rows}), dict(sorted(skipped.items())))
    _record(out_dir, split, converter, source, result)
    return result


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _record(out_dir: Path, split: str, converter: str, source, result: ConversionResult) -> None:
    manifest = out_dir / "conversion.json"
    current = json.loads(manifest.read_text()) if manifest.exists() else {}
    current[split] = {"converter": converter, "source": str(source), "rows": result.rows, "images": result.images,
                      "skipped": result.skipped}
    _write_text(manifest, json.dumps(current, indent=1, sort_keys=True) + "\n")


def check_box_convention(convention: str) -> str:
    """Return `convention` if it is one of `BOX_CONVENTIONS`, else raise `ValueError` listing them."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box_convention={convention!r} is not one of {', '.join(BOX_CONVENTIONS)}")
    return convention
