"""Tests for mmr1kit.data.synthetic and mmr1kit.data.synthetic_tasks: determinism, balance, geometry, cards."""

import collections
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmr1kit.data.synthetic import (
    COLORS,
    TASKS,
    generate_rows,
    shape_extent,
    task_defaults,
    undercount_labels,
    write_dataset,
)
from mmr1kit.data.synthetic_tasks import OCR_ALPHABET, WORDS, _holds

CARDS = Path(__file__).resolve().parents[1] / "data_cards"
SHAPE_TASKS = ("counting", "grounding", "detection")
BASE_FIELDS = {"id": str, "task": str, "problem": str, "solution": str, "image": str, "difficulty": float}


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _rows(task, n, seed=0, **kwargs):
    return list(generate_rows(task, n, seed, **kwargs))


def _object_mask(array: np.ndarray, obj: dict) -> np.ndarray:
    """Non-white pixels within the object's circumscribed circle (+1 px): exactly its pixels, as shapes keep a gap."""
    h, w = array.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = obj["center"]
    near = np.hypot(xx - cx, yy - cy) <= shape_extent(obj["shape"], obj["radius"]) + 1
    return near & (array != 255).any(axis=2)


def _mask_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# ---------------------------------------------------------------------------------------------------------------
# Files and determinism
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_regeneration_is_byte_identical_and_seed_dependent(task, tmp_path):
    a = write_dataset(task, tmp_path / "a", n=10, seed=3)
    b = write_dataset(task, tmp_path / "b", n=10, seed=3)
    c = write_dataset(task, tmp_path / "c", n=10, seed=4)
    assert a == tmp_path / "a" / "train.json"
    assert _digest(a.parent) == _digest(b.parent)
    assert _digest(a.parent) != _digest(c.parent)
    assert a.read_text() != c.read_text()


@pytest.mark.parametrize("task", TASKS)
def test_written_rows_match_generated_rows_and_images(task, tmp_path):
    path = write_dataset(task, tmp_path, n=6, seed=1, split="test")
    rows = json.loads(path.read_text())
    assert path.read_text() == json.dumps(rows, indent=1, sort_keys=True) + "\n"
    generated = _rows(task, 6, 1, split="test")
    assert rows == json.loads(json.dumps([r for r, _ in generated]))
    for i, (row, (_, image)) in enumerate(zip(rows, generated)):
        for field, kind in BASE_FIELDS.items():
            assert isinstance(row[field], kind), (task, field, row[field])
        assert row["task"] == task and row["id"] == f"{i:06d}"
        assert row["image"] == f"images/test/{row['id']}.png"
        on_disk = Image.open(path.parent / row["image"])
        assert on_disk.mode == "RGB" and on_disk.info.keys() <= {"dpi"}  # no text chunks / timestamps
        assert np.array_equal(np.asarray(on_disk), np.asarray(image))
        assert 0.0 <= row["difficulty"] <= 1.0


@pytest.mark.parametrize("task", TASKS)
def test_rows_do_not_depend_on_n(task):
    assert [r for r, _ in _rows(task, 5)] == [r for r, _ in _rows(task, 9)][:5]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [56, (96, 64)])
def test_image_size_is_honoured(task, size):
    width, height = (size, size) if isinstance(size, int) else size
    for row, image in _rows(task, 6, image_size=size):
        assert image.size == (width, height)
        assert (row["image_width"], row["image_height"]) == (width, height)
        for obj in row.get("objects", []):
            x1, y1, x2, y2 = obj["bbox"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="task"):
        generate_rows("segmentation", 1)
    with pytest.raises(TypeError, match="max_cnt"):
        generate_rows("counting", 1, max_cnt=3)
    with pytest.raises(ValueError, match="image_size"):
        generate_rows("counting", 1, image_size=20)
    with pytest.raises(ValueError, match="split"):
        generate_rows("counting", 1, split="../x")
    with pytest.raises(ValueError, match="target"):
        next(generate_rows("counting", 1, target="big red circle"))
    with pytest.raises(ValueError, match="target shape"):
        write_dataset("counting", tmp_path / "bad", n=2, target=("red", "hexagon"))
    assert not (tmp_path / "bad").exists()  # nothing written for a bad request
    with pytest.raises(ValueError, match="distractors"):
        next(generate_rows("counting", 1, distractors="shape"))
    with pytest.raises(ValueError, match="cannot place"):  # bounded retries, never an endless loop
        list(generate_rows("counting", 3, max_count=40, image_size=28))


# ---------------------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------------------


def test_counting_defaults_match_the_feasibility_task():
    rows = _rows("counting", 40)
    for row, image in rows:
        assert image.size == (112, 112) and image.getpixel((0, 0)) == (255, 255, 255)
        assert row["problem"] == "How many red circles are there? Answer as <answer>N</answer>."
        assert row["solution"] == str(row["count"]) and 0 <= row["count"] <= 4
        assert 0 <= row["num_distractors"] <= 3
        targets = [o for o in row["objects"] if o["label"] == "red circle"]
        others = [o for o in row["objects"] if o["label"] != "red circle"]
        assert len(targets) == row["count"] and len(others) == row["num_distractors"]
        assert all(7 <= o["radius"] <= 10 for o in row["objects"])
        assert all(o["color"] in ("green", "blue", "yellow") and o["shape"] in ("circle", "square") for o in others)
        expected = 0.5 * row["count"] / 4 + 0.5 * row["num_distractors"] / 3
        assert row["difficulty"] == pytest.approx(expected, abs=1e-4)


def test_counting_answers_are_balanced_in_every_prefix():
    counts = [row["count"] for row, _ in _rows("counting", 103, seed=7, max_count=4)]
    tally = collections.Counter(counts)
    assert set(tally) == set(range(5)) and max(tally.values()) - min(tally.values()) <= 1
    prefix = collections.Counter(counts[:52])
    assert max(prefix.values()) - min(prefix.values()) <= 1


def test_mixed_distractors_cover_the_three_kinds():
    kinds = collections.Counter()
    for row, _ in _rows("counting", 60, distractors="mixed"):
        for o in row["objects"][row["count"] :]:
            assert o["label"] != "red circle"
            kinds[(o["color"] == "red", o["shape"] == "circle")] += 1
    assert set(kinds) == {(False, True), (True, False), (False, False)}


def test_counting_pixels_show_the_recorded_shapes():
    for row, image in _rows("counting", 10, target="blue triangle", distractors="mixed"):
        array = np.asarray(image)
        assert row["problem"].startswith("How many blue triangles")
        for obj in row["objects"]:
            mask = _object_mask(array, obj)
            assert _mask_box(mask) == obj["bbox"]
            assert (array[mask] == COLORS[obj["color"]]).all()
        painted = sum(_object_mask(array, o).sum() for o in row["objects"])
        assert painted == (array != 255).any(axis=2).sum()  # nothing drawn but the recorded shapes


@pytest.mark.parametrize("task", SHAPE_TASKS)
def test_shapes_never_overlap(task):
    for row, _ in _rows(task, 40, seed=5, image_size=64):
        objs = row["objects"]
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                distance = math.dist(a["center"], b["center"])
                assert distance >= shape_extent(a["shape"], a["radius"]) + shape_extent(b["shape"], b["radius"])


def test_undercount_labels_biases_only_large_counts():
    rows = [row for row, _ in _rows("counting", 500)]
    labels = undercount_labels(rows, threshold=3, p=0.8, seed=0)
    assert labels == undercount_labels(rows, threshold=3, p=0.8, seed=0)
    lowered = [r["count"] for r, lab in zip(rows, labels) if int(lab) != r["count"]]
    assert all(int(lab) in (r["count"], r["count"] - 1) for r, lab in zip(rows, labels))
    assert min(lowered) >= 3
    assert 0.7 < len(lowered) / sum(r["count"] >= 3 for r in rows) < 0.9
    assert all(r["solution"] == str(r["count"]) for r in rows)  # the rows keep the true counts


# ---------------------------------------------------------------------------------------------------------------
# Grounding, OCR, detection
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate_prob", [0.0, 1.0])
def test_grounding_box_is_tight_and_the_expression_unique(duplicate_prob):
    for row, image in _rows("grounding", 30, seed=2, duplicate_prob=duplicate_prob):
        box = json.loads(row["solution"])
        target, objs = row["objects"][0], row["objects"]
        mask = _object_mask(np.asarray(image), target)
        assert box == target["bbox"] and all(isinstance(v, int) for v in box)
        assert all(abs(a - b) <= 1 for a, b in zip(box, _mask_box(mask)))  # 1 px antialias slack
        assert row["problem"] == f"Output the bounding box of {row['referring_expression']} as [x1, y1, x2, y2]."
        assert row["box_convention"] == "pixel" and row["target"] == target["label"]
        if row["relation"]:
            refs = [o for o in objs if o["label"] == row["reference"]]
            assert len(refs) == 1
            assert row["referring_expression"] == f"the {target['label']} {row['relation']} the {row['reference']}"
            matches = [
                o
                for o in objs
                if o["label"] == target["label"] and _holds(row["relation"], o["bbox"], refs[0]["bbox"])
            ]
            assert matches == [target]
        else:
            assert [o["label"] for o in objs].count(target["label"]) == 1
            assert not any(o["shape"] == target["shape"] for o in objs[1:])
        if duplicate_prob == 1.0 and len(objs) >= 3:
            assert [o["label"] for o in objs].count(target["label"]) == 2 and row["relation"]


@pytest.mark.parametrize("source", ["chars", "words"])
def test_ocr_text_is_rendered_inside_the_image(source):
    for row, image in _rows("ocr", 12, seed=9, source=source, image_size=(96, 64)):
        text = row["solution"]
        assert text == row["text"] and 3 <= len(text) <= 8
        assert set(text) <= set(OCR_ALPHABET) if source == "chars" else text in WORDS
        ink = (np.asarray(image) != 255).any(axis=2)
        assert ink.sum() > 20
        x1, y1, x2, y2 = row["text_bbox"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 64
        assert all(abs(a - b) <= 1 for a, b in zip(row["text_bbox"], _mask_box(ink)))
        assert row["problem"] == "What text is written in the image? Answer as <answer>TEXT</answer>."


def test_detection_solution_lists_every_object_in_reading_order():
    rows = _rows("detection", 25, seed=4)
    assert collections.Counter(r["count"] for r, _ in rows) == {c: 5 for c in range(1, 6)}
    for row, image in rows:
        items = json.loads(row["solution"])
        assert len(items) == row["count"] == len(row["objects"])
        assert all(set(item) == {"bbox_2d", "label"} for item in items)
        keys = [(it["bbox_2d"][1], it["bbox_2d"][0], it["bbox_2d"][3], it["bbox_2d"][2], it["label"]) for it in items]
        assert keys == sorted(keys)
        recorded = sorted((o["bbox"], o["label"]) for o in row["objects"])
        assert sorted((it["bbox_2d"], it["label"]) for it in items) == recorded
        for obj in row["objects"]:
            assert _mask_box(_object_mask(np.asarray(image), obj)) == obj["bbox"]


# ---------------------------------------------------------------------------------------------------------------
# Data cards
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_data_card_front_matter_names_a_working_generator(task):
    text = (CARDS / f"synthetic_{task}.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---", 2)[1])
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert meta["annotations_creators"] == ["machine-generated"] and meta["source_datasets"] == ["original"]
    files = {d["split"]: d["path"] for d in meta["configs"][0]["data_files"]}
    assert meta["configs"][0]["config_name"] == "default" and files == {"train": "train.json", "test": "test.json"}
    spec = meta["mmr1kit"]
    assert spec["generator"] == "mmr1kit.data.synthetic.write_dataset" and spec["task"] == task
    params = dict(spec["defaults"])
    assert set(params.pop("sizes")) == {"train", "test"}
    assert isinstance(params.pop("seed"), int) and params.pop("image_size") == 112
    defaults = json.loads(json.dumps(task_defaults(task)))
    assert params == {k: defaults[k] for k in params}  # the card documents the generator's real defaults
    row, _ = next(generate_rows(task, 1, **params))
    assert row["task"] == task
    for heading in (
        "## Dataset Details",
        "## Uses",
        "## Dataset Structure",
        "## Dataset Creation",
        "## Bias, Risks, and Limitations",
        "## How to load",
    ):
        assert heading in text, heading
