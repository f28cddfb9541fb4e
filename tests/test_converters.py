"""Dataset converters on hand-made fixtures in the published layouts (`tests/fixtures/datasets/`), their data cards,
and the synthetic math generator.

Each converter's output is loaded back through `mmr1kit.data.load_dataset`, via the dataset's own card with its
`mmr1kit.data_dir` pointed at the converted folder, so the card, the converter and the loader agree.
"""

import hashlib
import importlib
import inspect
import json
import pickle
from pathlib import Path

import pytest
import yaml

from mmr1kit.data import DatasetError, load_dataset, read_card
from mmr1kit.data.converters import (
    CONVERTERS,
    convert,
    convert_clevr_cogen,
    convert_coco_detection,
    convert_countbenchqa,
    convert_geometry3k,
    convert_mathverse,
    convert_mathvista,
    convert_pixmo_count,
    convert_refcoco,
    convert_refer,
    convert_superclevr,
    convert_textvqa,
    encode_box,
    iter_source,
)
from mmr1kit.rewards import REWARDS, SOLUTION_VALIDATORS

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"
CARDS = ROOT / "data_cards"
REAL_CARDS = ["clevr_cogen_a_train", "superclevr_test200", "countbenchqa", "pixmo_count", "refcoco", "refcoco_plus",
              "refcocog", "textvqa", "coco_detection", "mathvista_testmini", "mathverse_vision_only", "geometry3k"]
HEADINGS = ["## Source and license", "## Canonical structure", "## Preprocessing", "## Statistics",
            "## Intended use here / out of scope", "## Known issues", "## Maintenance", "## How to load"]


def rows_of(result):
    return json.loads(Path(result.path).read_text())


def through_card(card_name, out_dir, split, tmp_path, **kwargs):
    """Load `split` of the converted folder through a copy of the card whose data_dir points at `out_dir`."""
    text = (CARDS / f"{card_name}.md").read_text()
    meta = read_card(CARDS / f"{card_name}.md")
    copy = tmp_path / f"{card_name}.md"
    copy.write_text(text.replace(f"data_dir: {meta['mmr1kit']['data_dir']}", f"data_dir: {out_dir}", 1))
    return load_dataset(copy, split, **kwargs)


# ---------------------------------------------------------------------------------------------- counting


def test_clevr_cogen_keeps_bare_counts_and_skips_small_images(tmp_path):
    out = tmp_path / "clevr"
    result = convert_clevr_cogen(FIXTURES / "clevr_cogen_a_train", out)
    assert (result.rows, result.skipped) == (3, {"small_image": 1})
    rows = rows_of(result)
    assert [r["solution"] for r in rows] == ["3", "1", "0"] and [r["count"] for r in rows] == [3, 1, 0]
    assert {r["task"] for r in rows} == {"counting"} and rows[0]["image_width"] == 64
    # bytes stored as published (an RGBA PNG stays the same file)
    import pyarrow.parquet as pq

    source = pq.read_table(next((FIXTURES / "clevr_cogen_a_train").rglob("*.parquet"))).to_pylist()[0]
    assert (out / rows[0]["image"]).read_bytes() == source["image"]["bytes"]
    ds = through_card("clevr_cogen_a_train", out, "train", tmp_path, answer_template="r1v")
    assert ds["solution"] == ["<answer> 3 </answer>", "<answer> 1 </answer>", "<answer> 0 </answer>"]  # wrapped once
    assert json.loads((out / "conversion.json").read_text())["train"]["skipped"] == {"small_image": 1}


def test_clevr_layout_as_math(tmp_path):
    rows = rows_of(convert_clevr_cogen(FIXTURES / "clevr_cogen_a_train", tmp_path / "m", task="math"))
    assert [r["task"] for r in rows] == ["math"] * 3 and rows[0]["solution"] == "3"


def test_superclevr_jsonl_with_image_folder(tmp_path):
    jsonl = FIXTURES / "superclevr" / "superclevr_test200_counting_problems.jsonl"
    result = convert_superclevr(jsonl, tmp_path / "sc")
    assert (result.rows, result.skipped) == (2, {"missing_image": 1})
    ds = through_card("superclevr_test200", tmp_path / "sc", "test", tmp_path)
    assert ds["count"] == [2, 1] and ds["problem"][0] == "How many different items are there in the image?"
    assert Path(ds["image_path"][0]).name == "superCLEVR_new_025000.png"


def test_countbenchqa(tmp_path):
    result = convert_countbenchqa(FIXTURES / "countbenchqa", tmp_path / "cb")
    ds = through_card("countbenchqa", tmp_path / "cb", "test", tmp_path)
    assert result.rows == 2 and ds["solution"] == ["2", "3"] and ds["caption"][1] == "three red boxes"
    assert Path(ds["image_path"][0]).suffix == ".jpg"  # JPEG bytes keep their format


def test_pixmo_count_checks_downloads_by_sha256(tmp_path):
    result = convert_pixmo_count(FIXTURES / "pixmo_count", tmp_path / "px", images_dir=FIXTURES / "pixmo_count" / "images")
    assert (result.rows, result.skipped) == (1, {"missing_image": 1, "sha256_mismatch": 1})
    row = rows_of(result)[0]
    assert row["problem"] == "How many boxes are there in the image?" and row["points"] == [[9.0, 9.0], [35.0, 9.0]]
    ds = through_card("pixmo_count", tmp_path / "px", "validation", tmp_path)
    assert ds["count"] == [2]
    unchecked = convert_pixmo_count(FIXTURES / "pixmo_count", tmp_path / "px2",
                                    images_dir=FIXTURES / "pixmo_count" / "images", check_sha256=False)
    assert unchecked.rows == 2


# ---------------------------------------------------------------------------------------------- grounding


def test_refcoco_lmms_lab_parquet_xywh_to_each_convention(tmp_path):
    pixel = convert_refcoco(FIXTURES / "refcoco", tmp_path / "px")
    rows = rows_of(pixel)
    assert pixel.rows == 4 and pixel.images == 2  # one row per expression; the shared image stored once
    assert [r["id"] for r in rows] == ["refcoco-val-100-0", "refcoco-val-100-1", "refcoco-val-101-0", "refcoco-val-102-0"]
    assert rows[0]["problem"] == "man in blue" and json.loads(rows[0]["solution"]) == [10.0, 20.0, 30.0, 50.0]
    assert json.loads(rows[3]["solution"]) == [60.0, 0.0, 80.0, 20.0]  # [60, -5, 30, 25] clipped to the 80x60 image
    qwen = rows_of(convert_refcoco(FIXTURES / "refcoco", tmp_path / "q", box_convention="qwen2vl_1000"))
    assert json.loads(qwen[0]["solution"]) == [125, 333, 375, 833] and qwen[0]["box_convention"] == "qwen2vl_1000"
    rel = rows_of(convert_refcoco(FIXTURES / "refcoco", tmp_path / "r", box_convention="relative", expressions="first"))
    assert len(rel) == 3 and json.loads(rel[0]["solution"]) == [0.125, 0.3333, 0.375, 0.8333]
    ds = through_card("refcoco", tmp_path / "q", "val", tmp_path, system_prompt_template="grounding")
    assert ds["task"] == ["grounding"] * 4 and ds["box_convention"][0] == "qwen2vl_1000"


def test_boxes_drawn_where_the_converted_solution_says(tmp_path):
    from PIL import Image

    row = rows_of(convert_refcoco(FIXTURES / "refcoco", tmp_path / "px"))[0]
    x1, y1, x2, y2 = (int(v) for v in json.loads(row["solution"]))
    with Image.open(tmp_path / "px" / row["image"]) as im:
        pixels = im.convert("RGB")
        assert pixels.getpixel((x1, y1)) == (30, 30, 200) and pixels.getpixel((x2 - 1, y2 - 1)) == (30, 30, 200)
        assert pixels.getpixel((x2, y2)) != (30, 30, 200) and pixels.getpixel((x1 - 1, y1)) != (30, 30, 200)


def test_refer_pickles_give_every_split(tmp_path):
    root = FIXTURES / "refer"
    train = convert_refer(root, root / "images" / "train2014", tmp_path / "refer", "train")
    test_a = convert_refer(root, root / "images" / "train2014", tmp_path / "refer", "testA")
    assert (train.rows, test_a.rows) == (2, 1)
    rows = rows_of(train)
    assert [r["problem"] for r in rows] == ["left man", "man"]
    assert json.loads(rows[0]["solution"]) == [10.0, 20.0, 30.0, 50.0] and rows[0]["bbox_xywh"] == [10.0, 20.0, 20.0, 30.0]
    ds = through_card("refcoco", tmp_path / "refer", "testA", tmp_path)
    assert ds["referring_expression"] == ["right guy"] and json.loads(ds["solution"][0]) == [50.0, 10.0, 70.0, 30.0]


def test_refer_unpickler_refuses_code(tmp_path):
    folder = tmp_path / "refer" / "refcoco"
    folder.mkdir(parents=True)
    (folder / "refs(unc).p").write_bytes(pickle.dumps([{"split": "train", "x": Path("boom")}]))
    (folder / "instances.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        convert_refer(tmp_path / "refer", tmp_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- OCR and detection


def test_textvqa_references_by_frequency(tmp_path):
    result = convert_textvqa(FIXTURES / "textvqa", tmp_path / "tv")
    assert (result.rows, result.skipped, result.images) == (2, {"no_answer": 1}, 1)
    rows = rows_of(result)
    assert json.loads(rows[0]["solution"]) == ["dakota", "dakota digital", "nous les gosses", "clos culombu"]
    assert json.loads(rows[1]["solution"]) == ["stop", "STOP"] and rows[1]["answer"] == "stop"
    ds = through_card("textvqa", tmp_path / "tv", "validation", tmp_path)
    assert ds["task"] == ["ocr", "ocr"] and REWARDS["anls"](["<answer>Dakota</answer>"], [ds["solution"][0]]) == [1.0]


def test_coco_detection_xywh_crowd_and_empty_images(tmp_path):
    ann = FIXTURES / "coco" / "annotations" / "instances_val2017.json"
    result = convert_coco_detection(ann, FIXTURES / "coco" / "val2017", tmp_path / "coco")
    assert (result.rows, result.skipped) == (2, {"no_objects": 1})
    first = rows_of(result)[0]
    assert json.loads(first["solution"]) == [{"bbox_2d": [50.0, 5.0, 70.0, 25.0], "label": "dog"},
                                             {"bbox_2d": [10.0, 10.0, 30.0, 40.0], "label": "person"}]
    assert (first["count"], first["num_crowd"], first["categories"]) == (2, 1, ["dog", "person"])
    assert "dog, person" in first["problem"]
    ds = through_card("coco_detection", tmp_path / "coco", "val", tmp_path)
    assert ds["coco_image_id"] == [139, 285] and ds["image_width"] == [80, 60]
    assert REWARDS["detection"]([first["solution"]], [first["solution"]]) == [1.0]
    empty = convert_coco_detection(ann, FIXTURES / "coco" / "val2017", tmp_path / "c2", keep_empty=True,
                                   categories=["bear"], box_convention="qwen2vl_1000")
    assert [r["solution"] for r in rows_of(empty)] == ["[]", '[{"bbox_2d": [83, 83, 917, 917], "label": "bear"}]', "[]"]


# ---------------------------------------------------------------------------------------------- math benchmarks


def test_mathvista_letters_for_choices_and_official_fields(tmp_path):
    result = convert_mathvista(FIXTURES / "mathvista", tmp_path / "mv")
    assert (result.rows, result.skipped) == (5, {"answer_not_in_choices": 1, "small_image": 1})
    rows = {r["pid"]: r for r in rows_of(result)}
    assert rows["1"]["solution"] == "C" and rows["1"]["answer_text"] == "145°"  # the letter of "145°"
    assert rows["1"]["problem"].startswith("Hint: Please answer the question and provide the correct option letter")
    assert "(C) 145°" in rows["1"]["problem"] and rows["1"]["question"].startswith("As shown in the figure")
    assert (rows["3"]["answer_type"], rows["3"]["precision"], rows["4"]["solution"]) == ("float", 1.0, "[0, 2, 0]")
    assert rows["2"]["unit"] == "cm" and rows["2"]["subtask"] == "geometry problem solving"
    assert rows["6"]["image_width"] == 60  # no decoded_image: the file under images/ was read
    ds = through_card("mathvista_testmini", tmp_path / "mv", "testmini", tmp_path)
    assert set(ds["task"]) == {"math"} and ds["choices"][0] == ["135°", "140°", "145°", "150°"]


def test_mathverse_keeps_one_version_and_its_reasoning_query(tmp_path):
    result = convert_mathverse(FIXTURES / "mathverse", tmp_path / "vo")
    assert (result.rows, result.skipped) == (3, {"other_version": 1})
    rows = rows_of(result)
    assert [r["solution"] for r in rows] == ["14", "B", r"\frac{\sqrt{3}}{2}"]
    assert [r["question_type"] for r in rows] == ["free_form", "multi_choice", "free_form"]
    assert all(r["problem"].startswith("According to the question shown in the image, please first conduct")
               for r in rows) and rows[0]["question"] == ""
    text = convert_mathverse(FIXTURES / "mathverse" / "testmini.parquet", tmp_path / "td", version="Text Dominant",
                             query="query_wo")
    assert text.rows == 1 and rows_of(text)[0]["problem"].startswith("According to the question shown in the image, "
                                                                      "please directly answer")
    ds = through_card("mathverse_vision_only", tmp_path / "vo", "testmini", tmp_path)
    assert ds["problem_version"] == ["Vision Only"] * 3
    with pytest.raises(ValueError, match="version='Vision only' is not one of"):
        convert_mathverse(FIXTURES / "mathverse", tmp_path / "x", version="Vision only")


def test_mathverse_github_json_with_image_paths(tmp_path):
    from PIL import Image

    (tmp_path / "images_version_6").mkdir()
    Image.new("RGB", (40, 40), "white").save(tmp_path / "images_version_6" / "image_685.png")
    row = {"sample_index": "3425", "problem_index": "685", "problem_version": "Vision Only", "question": "",
           "image": "images_version_6/image_685.png", "answer": "14", "question_type": "free-form",
           "metadata": {"split": "testmini", "source": "Geo3D_collected", "subject": "Solid Geometry",
                        "subfield": "Length"}, "query_wo": "wo", "query_cot": "cot"}
    (tmp_path / "testmini.json").write_text(json.dumps([row]))
    result = convert_mathverse(tmp_path, tmp_path / "out")
    assert result.rows == 1 and rows_of(result)[0]["image_width"] == 40


def test_geometry3k_one_diagram_placed_at_its_placeholder(tmp_path):
    result = convert_geometry3k(FIXTURES / "geometry3k", tmp_path / "g3k")
    assert (result.rows, result.skipped) == (2, {"image_count": 1})
    rows = rows_of(result)
    assert [r["id"] for r in rows] == ["geometry3k-test-2401", "geometry3k-test-2402"]
    assert rows[1]["solution"] == r"2\sqrt{3}" and rows[0]["choices"] == ["1", "2", "3", "4"]
    ds = through_card("geometry3k", tmp_path / "g3k", "test", tmp_path)
    assert ds["prompt"][0][0]["content"] == [{"type": "image"}, {"type": "text", "text": "Find x."}]


# ---------------------------------------------------------------------------------------------- shared behaviour


def test_conversion_is_deterministic(tmp_path):
    a = convert_refcoco(FIXTURES / "refcoco", tmp_path / "a")
    b = convert_refcoco(FIXTURES / "refcoco", tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    def digest(folder):
        return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "images").rglob("*") if p.is_file())

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_save_to_disk_folders_and_limit(tmp_path):
    import datasets

    parquet = next((FIXTURES / "countbenchqa").rglob("*.parquet"))
    datasets.Dataset.from_parquet(str(parquet)).save_to_disk(str(tmp_path / "disk"))
    result = convert_countbenchqa(tmp_path / "disk", tmp_path / "cb", limit=1)
    assert result.rows == 1 and rows_of(result)[0]["count"] == 2


def test_wrong_layouts_name_the_fields(tmp_path):
    expected = r"no field\(s\) \['question', 'number'\] \(it has \['image', 'problem', 'solution'\]\)"
    with pytest.raises(ValueError, match=expected):
        convert_countbenchqa(FIXTURES / "clevr_cogen_a_train", tmp_path / "x", split="train")
    with pytest.raises(ValueError, match="no parquet file for split 'nope'"):
        list(iter_source(FIXTURES / "countbenchqa", "nope"))
    with pytest.raises(ValueError, match="box_convention='pixels'"):
        convert_refcoco(FIXTURES / "refcoco", tmp_path / "x", box_convention="pixels")
    with pytest.raises(ValueError, match="unknown converter 'coco'"):
        convert("coco")


def test_every_row_has_a_task_so_bad_solutions_fail_at_load_time(tmp_path):
    result = convert_refcoco(FIXTURES / "refcoco", tmp_path / "rc")
    rows = rows_of(result)
    assert all(r["task"] in SOLUTION_VALIDATORS for r in rows)
    rows[1]["solution"] = "[30, 50, 10, 20]"  # x2 < x1: what a wrong xywh conversion would write
    result.path.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match="row 2, field 'solution'.*invalid grounding solution"):
        load_dataset(tmp_path / "rc", "val")


def test_encode_box_conventions():
    assert encode_box([10, 20, 30, 50], "pixel", 80, 60) == [10, 20, 30, 50]
    assert encode_box([10, 20, 30, 50], "qwen2vl_1000", 80, 60) == [125, 333, 375, 833]
    assert encode_box([10, 20, 30, 50], "relative", 80, 60) == [0.125, 0.3333, 0.375, 0.8333]


# ---------------------------------------------------------------------------------------------- cards


@pytest.mark.parametrize("name", REAL_CARDS)
def test_real_dataset_cards(name):
    text = (CARDS / f"{name}.md").read_text()
    meta = yaml.safe_load(text.split("---", 2)[1])
    spec = meta["mmr1kit"]
    assert meta["license"] and meta["pretty_name"] and meta["source_datasets"]
    assert meta["configs"][0]["data_files"] and spec["data_dir"].startswith("data/")
    assert spec["task"] in SOLUTION_VALIDATORS and all(r in REWARDS for r in spec["rewards"])
    module, _, func = spec["converter"].rpartition(".")
    assert getattr(importlib.import_module(module), func) in CONVERTERS.values()
    assert [h for h in HEADINGS if h not in text] == []
    assert set(spec["splits"]) == {d["split"] for d in meta["configs"][0]["data_files"]}


# ---------------------------------------------------------------------------------------------- synthetic math


def test_synthetic_math_is_seeded_and_correct(tmp_path):
    from mmr1kit.data.synthetic import write_dataset
    from mmr1kit.data.synthetic_math import evaluate_expression

    a = write_dataset("math", tmp_path / "a", n=40, seed=3)
    b = write_dataset("math", tmp_path / "b", n=20, seed=3)
    rows_a, rows_b = json.loads(a.read_text()), json.loads(b.read_text())
    assert rows_a[:20] == rows_b  # a small dataset is a prefix of a larger one
    assert (tmp_path / "a" / rows_a[5]["image"]).read_bytes() == (tmp_path / "b" / rows_b[5]["image"]).read_bytes()
    for row in rows_a:
        tokens = [t if t in "+-*" else int(t) for t in row["expression"].split()]
        assert int(row["solution"]) == evaluate_expression(tokens) == eval(row["expression"])
    assert evaluate_expression([3, "+", 4, "*", 2]) == 11 and evaluate_expression([8, "-", 2, "-", 3]) == 3
    ds = load_dataset(tmp_path / "a", "train")
    assert set(ds["task"]) == {"math"} and len(ds) == 40
    with pytest.raises(ValueError, match="task"):
        write_dataset("algebra", tmp_path / "c", n=1)


def test_synthetic_math_card_defaults_match_the_generator():
    from mmr1kit.data.synthetic_math import iter_math

    spec = read_card(CARDS / "synthetic_math.md")["mmr1kit"]
    params = {k: v.default for k, v in inspect.signature(iter_math).parameters.items()
              if v.kind is inspect.Parameter.KEYWORD_ONLY}
    defaults = {k: v for k, v in spec["defaults"].items() if k not in ("seed", "sizes", "image_size")}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()} == defaults
    assert spec["generator"] == "mmr1kit.data.synthetic.write_dataset" and spec["task"] == "math"


def test_synthetic_math_card_loads():
    ds = load_dataset(CARDS / "synthetic_math.md", "test")
    assert set(ds["task"]) == {"math"}
