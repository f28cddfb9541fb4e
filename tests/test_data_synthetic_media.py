"""The multi-image and video synthetic tasks (mmr1kit.data.synthetic_media) and what every data card says it suits."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmr1kit.data.synthetic import generate_rows, task_defaults, write_dataset
from mmr1kit.data.synthetic_media import MEDIA_TASKS
from mmr1kit.families import FAMILIES

CARDS = Path(__file__).resolve().parents[1] / "data_cards"


def _red(image) -> bool:
    pixels = np.asarray(image)
    return bool(((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).any())


def test_counting_multi_needs_every_image():
    for row, media in generate_rows("counting_multi", 40, seed=2, image_size=56):
        images = media["images"]
        assert len(images) == len(row["images"]) == 2 and row["task"] == "counting"
        assert int(row["solution"]) == row["count"] == sum(row["counts"])
        for image, k, objects in zip(images, row["counts"], row["objects"]):
            assert sum(o["label"] == "red circle" for o in objects) == k
            assert _red(image) == (k > 0)  # each image shows exactly its share of the targets
    totals = [r["count"] for r, _ in generate_rows("counting_multi", 50, seed=0)]
    assert sorted(set(totals)) == [0, 1, 2, 3, 4] and all(totals.count(v) == 10 for v in range(5))


def test_frame_change_answer_is_the_first_red_frame():
    for row, media in generate_rows("frame_change", 30, seed=1, image_size=56, num_frames=5):
        frames = media["video"]
        assert len(frames) == len(row["video"]) == 5 and row["fps"] == 1
        first_red = next(k for k, f in enumerate(frames, start=1) if _red(f))
        assert first_red == row["frame"] == int(row["solution"]) and first_red >= 2
        assert all(_red(f) for f in frames[first_red - 1 :])


@pytest.mark.parametrize("task", MEDIA_TASKS)
def test_media_tasks_write_byte_identical_files_and_rows_do_not_depend_on_n(task, tmp_path):
    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()

    a = write_dataset(task, tmp_path / "a", n=4, seed=3, image_size=56)
    b = write_dataset(task, tmp_path / "b", n=4, seed=3, image_size=56)
    assert digest(a.parent) == digest(b.parent) != digest(write_dataset(task, tmp_path / "c", n=4, seed=4).parent)
    rows = json.loads(a.read_text())
    field = "images" if task == "counting_multi" else "video"
    assert all((a.parent / p).is_file() for r in rows for p in r[field])
    assert [r for r, _ in generate_rows(task, 3)] == [r for r, _ in generate_rows(task, 6)][:3]


@pytest.mark.parametrize("task", MEDIA_TASKS)
def test_media_cards_document_the_generators_defaults(task):
    meta = yaml.safe_load((CARDS / f"synthetic_{task}.md").read_text().split("---", 2)[1])
    spec = meta["mmr1kit"]
    assert spec["generator"] == "mmr1kit.data.synthetic.write_dataset" and spec["task"] == task
    params = {k: v for k, v in spec["defaults"].items() if k not in ("seed", "sizes", "image_size")}
    assert params == {k: v for k, v in json.loads(json.dumps(task_defaults(task))).items() if k in params}
    assert set(params) == set(task_defaults(task))
    row, _ = next(generate_rows(task, 1, **params))
    assert ("images" if spec["inputs"] == "images" else "video") in row


def test_every_card_says_which_families_and_inputs_it_suits():
    for card in sorted(CARDS.glob("*.md")):
        text = card.read_text()
        spec = yaml.safe_load(text.split("---", 2)[1])["mmr1kit"]
        assert spec["inputs"] in ("image", "images", "video"), card.name
        families = spec["families"]
        assert families == "all" or (set(families) <= set(FAMILIES) and families), card.name
        assert (families != "all") == (spec["inputs"] == "video"), card.name  # only video narrows the families
        assert "## Model families and inputs" in text and f"`inputs: {spec['inputs']}`" in text, card.name
