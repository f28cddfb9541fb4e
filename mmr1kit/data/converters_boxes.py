"""Box converters: RefCOCO / RefCOCO+ / RefCOCOg grounding (lmms-lab parquet) and COCO detection (JSON + images).

Box conventions are explicit (`mmr1kit.rewards.parsing`): sources give COCO `[x, y, width, height]` in pixels of
the original image; rows store `[x1, y1, x2, y2]` in the `box_convention` asked for (`"pixel"` by default,
`"qwen2vl_1000"` for Qwen2-VL's 0..1000 space, `"relative"` for 0..1), and carry a `box_convention` column that
the rewards and `mmr1kit.evaluate` read. Boxes are clipped to the image first; boxes with no area left are dropped.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path

from mmr1kit.data.converters_base import (
    ConversionResult,
    Skipped,
    check_box_convention,
    clip_box,
    encode_box,
    iter_source,
    require,
    write_split,
    xywh_to_xyxy,
)

REFCOCO_VARIANTS = ("refcoco", "refcoco+", "refcocog")
DETECTION_QUESTION = (
    "Detect all objects of these categories in the image: {categories}. "
    'Output a JSON list of {{"bbox_2d": [x1, y1, x2, y2], "label": "..."}}.'
)


def _image_size(image) -> tuple[int, int] | None:
    """`(width, height)` of an image struct / bytes / path, read from its header; None if unreadable."""
    import io

    from PIL import Image

    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any unreadable image is skipped by the writer with its reason
        return None


def convert_refcoco(source, out_dir, split: str = "val", *, variant: str = "refcoco", box_convention: str = "pixel",
                    expressions: str = "all", limit=None, min_side: int = 28) -> ConversionResult:
    """Convert lmms-lab's RefCOCO / RefCOCO+ / RefCOCOg parquet (`lmms-lab/RefCOCO`, `RefCOCOplus`, `RefCOCOg`).

    Published fields (parquet, `data/<split>-*.parquet`; splits val/test/testA/testB, RefCOCOg val/test), as read by
    lmms-eval's `lmms_eval/tasks/refcoco/utils_rec.py`: `question_id` (str), `image` (`datasets.Image`, the COCO
    train2014 image), `question` (str, a generic instruction), `answer` (list of str: the referring expressions of
    one object), `bbox` (list of 4 floats, COCO `[x, y, width, height]` pixels), `file_name`, `segmentation`,
    `iscrowd`.

    Args:
        source: Parquet folder / file, `save_to_disk` folder, or Hub id.
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"val"`): The split to convert.
        variant (`str`, *optional*, defaults to `"refcoco"`): `refcoco`, `refcoco+` or `refcocog` (row ids, card).
        box_convention (`str`, *optional*, defaults to `"pixel"`): How `solution` is written (see module docstring).
        expressions (`str`, *optional*, defaults to `"all"`): `"all"` writes one row per referring expression (as
            lmms-eval explodes `answer`); `"first"` one row per object.
        limit, min_side: Keep the first `limit` usable rows; skip images with a side under `min_side` px.

    Returns:
        `ConversionResult`. Row: `problem` = the referring expression (use MMR1's `grounding` system prompt or the
        `qwenvl_rec` question template around it), `solution` = `json.dumps([x1, y1, x2, y2])`,
        `referring_expression`, `box_convention`, `bbox_xywh` (the source box), `file_name`. Ids:
        `<variant>-<split>-<question_id>-<expression index>`.
    """
    check_box_convention(box_convention)
    if variant not in REFCOCO_VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {REFCOCO_VARIANTS}")
    if expressions not in ("all", "first"):
        raise ValueError(f"expressions={expressions!r}: expected 'all' or 'first'")

    def examples():
        for i, row in enumerate(iter_source(source, split)):
            require(row, ("image", "answer", "bbox"), variant)
            size = _image_size(row["image"])
            if size is None:
                yield Skipped("unreadable_image")
                continue
            box = clip_box(xywh_to_xyxy(row["bbox"]), *size)
            if box is None:
                yield Skipped("degenerate_box")
                continue
            texts = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
            if not texts:
                yield Skipped("no_expression")
                continue
            qid = row.get("question_id", i)
            for k, text in enumerate(texts[:1] if expressions == "first" else texts):
                out = {
                    "id": f"{variant}-{split}-{qid}-{k}",
                    "task": "grounding",
                    "problem": text,
                    "solution": json.dumps(encode_box(box, box_convention, *size)),
                    "referring_expression": text,
                    "box_convention": box_convention,
                    "bbox_xywh": [float(v) for v in row["bbox"]],
                    "file_name": row.get("file_name") or "",
                }
                yield out, row["image"]

    return write_split(examples(), out_dir, split, converter=variant, source=source, limit=limit, min_side=min_side)


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles only plain data (dicts, lists, strings, numbers): any class or function reference is refused, so a
    tampered `refs(*).p` cannot run code. Python 2 byte strings are decoded as latin-1."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: refs(*).p holds only plain data")


def convert_refer(refer_root, images_dir, out_dir, split: str = "train", *, variant: str = "refcoco",
                  split_by: str | None = None, box_convention: str = "pixel", expressions: str = "all", limit=None,
                  min_side: int = 28) -> ConversionResult:
    """Convert the original RefCOCO / RefCOCO+ / RefCOCOg release (`lichengunc/refer`), the one with a train split.

    Published layout (the `refer` repository's `data/` folder, read by its `refer.py`): `<refer_root>/<variant>/
    refs(<split_by>).p`, a pickled list of refs with `ref_id`, `ann_id`, `image_id`, `split` (`train`, `val`,
    `testA`, `testB`, `test`), `sentences` (list of `{"sent", "raw", "tokens", "sent_id"}`), `category_id`,
    `file_name`; and `<refer_root>/<variant>/instances.json`, COCO-format `images` (`id`, `file_name`, `width`,
    `height`) and `annotations` (`id`, `bbox` as `[x, y, width, height]` pixels). Images are COCO train2014
    (`images_dir/COCO_train2014_<id>.jpg`).

    Args:
        refer_root: The folder holding `refcoco/`, `refcoco+/`, `refcocog/`.
        images_dir: The COCO train2014 image folder.
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"train"`): The refs' `split` value to keep.
        variant (`str`, *optional*, defaults to `"refcoco"`): `refcoco`, `refcoco+` or `refcocog`.
        split_by (`str`, *optional*): `unc` (refcoco, refcoco+), `umd` or `google` (refcocog); default `unc` for
            refcoco / refcoco+ and `umd` for refcocog.
        box_convention, expressions, limit, min_side: As in `convert_refcoco`.

    Returns:
        `ConversionResult` with the rows of `convert_refcoco` (`problem` = the `sent` of each sentence). Ids:
        `<variant>-<split>-<ref_id>-<sentence index>`.
    """
    check_box_convention(box_convention)
    if variant not in REFCOCO_VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {REFCOCO_VARIANTS}")
    split_by = split_by or ("umd" if variant == "refcocog" else "unc")
    folder = Path(refer_root) / variant
    with open(folder / f"refs({split_by}).p", "rb") as f:
        refs = _DataOnlyUnpickler(f, encoding="latin1").load()
    instances = json.loads((folder / "instances.json").read_text(encoding="utf-8"))
    images = {im["id"]: im for im in instances["images"]}
    boxes = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}

    def examples():
        for ref in refs:
            if ref.get("split") != split:
                continue
            require(ref, ("ref_id", "ann_id", "image_id", "sentences"), f"{folder}/refs({split_by}).p")
            image = images.get(ref["image_id"])
            if image is None or ref["ann_id"] not in boxes:
                yield Skipped("missing_annotation")
                continue
            box = clip_box(xywh_to_xyxy(boxes[ref["ann_id"]]), image["width"], image["height"])
            if box is None:
                yield Skipped("degenerate_box")
                continue
            texts = [s.get("sent", s.get("raw", "")).strip() for s in ref["sentences"]]
            texts = [t for t in texts if t]
            if not texts:
                yield Skipped("no_expression")
                continue
            for k, text in enumerate(texts[:1] if expressions == "first" else texts):
                yield {
                    "id": f"{variant}-{split}-{ref['ref_id']}-{k}",
                    "task": "grounding",
                    "problem": text,
                    "solution": json.dumps(encode_box(box, box_convention, image["width"], image["height"])),
                    "referring_expression": text,
                    "box_convention": box_convention,
                    "bbox_xywh": [float(v) for v in boxes[ref["ann_id"]]],
                    "file_name": image["file_name"],
                }, Path(images_dir) / image["file_name"]

    return write_split(examples(), out_dir, split, converter=f"{variant}-refer", source=folder, limit=limit,
                       min_side=min_side)


def convert_coco_detection(annotations, images_dir, out_dir, split: str = "val", *, box_convention: str = "pixel",
                           categories=None, max_objects: int | None = None, keep_empty: bool = False,
                           question_template: str = DETECTION_QUESTION, limit=None,
                           min_side: int = 28) -> ConversionResult:
    """Convert COCO detection (`instances_<split>2017.json` + the image folder) into one row per image.

    Published fields (COCO annotation format, https://cocodataset.org/#format-data): `images[]` with `id`,
    `file_name`, `width`, `height`; `annotations[]` with `id`, `image_id`, `category_id`, `bbox` (`[x, y, width,
    height]` pixels, float), `area`, `iscrowd` (0/1); `categories[]` with `id`, `name`, `supercategory`.

    Args:
        annotations: The annotation JSON file.
        images_dir: The folder holding `file_name` (e.g. `val2017/`).
        out_dir: Output folder.
        split (`str`, *optional*, defaults to `"val"`): Name of the written split.
        box_convention (`str`, *optional*, defaults to `"pixel"`): How boxes are written.
        categories (`list[str]`, *optional*): Keep only these category names (others are dropped from rows).
        max_objects (`int`, *optional*): Skip images with more objects (`too_many_objects`); long JSON answers
            exceed `max_completion_length`.
        keep_empty (`bool`, *optional*, defaults to `False`): Keep images without objects (`solution` `"[]"`).
        question_template (`str`, *optional*): `{categories}` becomes the sorted, comma-separated names of the
            categories present in the image (the answer's label vocabulary).
        limit, min_side: As in `convert_refcoco`.

    Returns:
        `ConversionResult`. Row: `solution` = JSON list of `{"bbox_2d": [x1, y1, x2, y2], "label": name}` sorted
        in reading order (top to bottom, then left to right), `count` (objects), `categories`, `box_convention`,
        `coco_image_id`, `num_crowd`. Crowd regions (`iscrowd=1`) are left out of the solution, as COCOeval ignores
        them. Ids: `coco-<split>-<image id>`.
    """
    check_box_convention(box_convention)
    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{annotations}: not a COCO annotation file (no {key!r}; it has {sorted(data)})")
    names = {c["id"]: c["name"] for c in data["categories"]}
    wanted = set(categories) if categories is not None else None
    if wanted is not None and wanted - set(names.values()):
        raise ValueError(f"categories {sorted(wanted - set(names.values()))} are not in {annotations}")
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)

    def examples():
        for image in sorted(data["images"], key=lambda im: im["id"]):
            require(image, ("id", "file_name", "width", "height"), f"{annotations} images[]")
            width, height = image["width"], image["height"]
            objects, crowd = [], 0
            for ann in by_image.get(image["id"], []):
                name = names[ann["category_id"]]
                if wanted is not None and name not in wanted:
                    continue
                if ann.get("iscrowd", 0):
                    crowd += 1
                    continue
                box = clip_box(xywh_to_xyxy(ann["bbox"]), width, height)
                if box is not None:
                    objects.append((box, name))
            if not objects and not keep_empty:
                yield Skipped("no_objects")
                continue
            if max_objects is not None and len(objects) > max_objects:
                yield Skipped("too_many_objects")
                continue
            objects.sort(key=lambda o: (o[0][1], o[0][0], o[1]))
            present = sorted({name for _, name in objects})
            solution = [{"bbox_2d": encode_box(b, box_convention, width, height), "label": n} for b, n in objects]
            yield {
                "id": f"coco-{split}-{image['id']}",
                "task": "detection",
                "problem": question_template.format(categories=", ".join(present) if present else "object"),
                "solution": json.dumps(solution),
                "count": len(objects),
                "categories": present,
                "box_convention": box_convention,
                "coco_image_id": image["id"],
                "num_crowd": crowd,
            }, Path(images_dir) / image["file_name"]

    return write_split(examples(), out_dir, split, converter="coco_detection", source=annotations, limit=limit,
                       min_side=min_side)
