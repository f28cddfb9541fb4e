import json
from pathlib import Path

import pytest
from PIL import Image

from mmr1kit.data import DatasetError, load_dataset, read_card


def _write(tmp_path, rows, name="train.json", jsonl=False):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    return path


@pytest.fixture
def image_dir(tmp_path):
    Image.new("RGB", (64, 48), "white").save(tmp_path / "ok.png")
    return tmp_path


def test_loads_mmr1_json_into_trl_columns(counting_dir):
    ds = load_dataset(counting_dir / "train.json")
    assert len(ds) == 64
    assert {"prompt", "image", "image_path", "solution", "id", "task", "count"} <= set(ds.column_names)
    row = ds[0]
    assert row["prompt"] == [{"role": "user", "content": row["problem"]}]
    assert row["image"].size == (112, 112)  # decoded lazily to PIL by datasets.Image
    assert row["solution"] == str(row["count"])


def test_folder_split_and_templates(counting_dir):
    ds = load_dataset(counting_dir, split="test", system_prompt_template="r1v", question_template="r1v",
                      answer_template="r1v")
    row = ds[0]
    assert row["prompt"][0]["role"] == "system" and "<think>" in row["prompt"][0]["content"]
    assert row["prompt"][1]["content"].endswith("final answer (number) in <answer> </answer> tags.")
    assert row["solution"] == f"<answer> {row['count']} </answer>"  # MMR1's r1v answer template


def test_config_supplies_templates_and_sample_size(counting_dir):
    from mmr1kit.config import MMR1Config

    config = MMR1Config(train_sample_size=10, seed=1, system_prompt_template="default")
    a = load_dataset(counting_dir, "train", config)
    b = load_dataset(counting_dir, "train", config)
    c = load_dataset(counting_dir, "train", config, seed=2)
    assert len(a) == 10 and a["id"] == b["id"] and a["id"] != c["id"]  # seeded random subset, reproducible
    assert a["id"] == sorted(a["id"])  # kept in file order
    assert a[0]["prompt"][0] == {"role": "system", "content": "You are a helpful assistant. "}


def test_jsonl_and_hf_datasets_folder(image_dir, tmp_path):
    rows = [{"problem": "How many?", "solution": 2, "image": "ok.png", "id": f"r{i}"} for i in range(3)]
    jsonl = _write(image_dir, rows, "data.jsonl", jsonl=True)
    ds = load_dataset(jsonl)
    assert ds["solution"] == ["2", "2", "2"]
    import datasets

    embedded = [{**r, "image": Image.open(image_dir / "ok.png")} for r in rows]  # images stored as bytes
    datasets.Dataset.from_list(embedded).save_to_disk(str(tmp_path / "hf"))
    ds = load_dataset(tmp_path / "hf")
    assert len(ds) == 3 and ds[0]["image"].size == (64, 48) and ds[0]["image_path"].endswith("hf#1")


def test_card_generates_and_loads(tmp_path):
    from pathlib import Path

    card = Path(__file__).resolve().parent.parent / "data_cards" / "synthetic_counting.md"
    meta = read_card(card)
    assert meta["mmr1kit"]["task"] == "counting"
    small = tmp_path / "card.md"
    text = card.read_text().replace("{train: 4000, test: 500}", "{train: 16, test: 8}")
    small.write_text(text)
    assert len(load_dataset(small, "test")) == 8


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"solution": "1", "image": "ok.png"}, "problem", "missing field"),  # no problem
        ({"problem": "", "solution": "1", "image": "ok.png"}, "problem", "non-empty"),  # empty problem
        ({"problem": "q", "solution": None, "image": "ok.png"}, "solution", "string or a number"),  # wrong type
        ({"problem": "q", "solution": "1", "image": 7}, "image", "path"),  # not a path
        ({"problem": "q", "solution": "1", "image": "missing.png"}, "image", "looked for"),  # no such file
        ({"problem": "q", "solution": "1", "image": "../../no/such.png"}, "image", "looked for"),  # outside, absent
        ({"problem": "q", "solution": "x", "image": "ok.png", "task": "grounding"}, "solution", "grounding"),
    ],
)
def test_bad_rows_name_file_row_field_value(image_dir, row, field, message):
    good = {"problem": "q", "solution": "1", "image": "ok.png", "id": "good"}
    path = _write(image_dir, [good, row])
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.file, err.row, err.field) == (str(path), 2, field)
    assert str(path) in str(err) and "row 2" in str(err)


def test_mmr1s_absolute_paths_and_paths_outside_the_folder_load(tmp_path):
    images, data = tmp_path / "images", tmp_path / "data" / "json"
    images.mkdir()
    data.mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(images / "a.png")
    rows = [
        {"id": "abs", "problem": "q", "solution": "1", "image": str(images / "a.png")},  # MMR1's own JSON files
        {"id": "up", "problem": "q", "solution": "1", "image": "../../images/a.png"},  # outside the JSON's folder
    ]
    ds = load_dataset(_write(data, rows))
    assert ds["image_path"] == [str(images / "a.png")] * 2 and ds[1]["image"].size == (40, 30)


def test_image_root_resolves_relative_paths(tmp_path):
    images, data = tmp_path / "store", tmp_path / "json"
    (images / "sub").mkdir(parents=True)
    data.mkdir()
    Image.new("RGB", (20, 10)).save(images / "sub" / "b.png")
    path = _write(data, [{"id": "r", "problem": "q", "solution": "1", "image": "sub/b.png"},
                         {"id": "gone", "problem": "q", "solution": "1", "image": "sub/nope.png"}])
    with pytest.raises(DatasetError, match=f"row 1.*looked for {data / 'sub' / 'b.png'}"):
        load_dataset(path)  # relative to the JSON's folder by default
    with pytest.raises(DatasetError, match=f"row 2.*looked for {images / 'sub' / 'nope.png'}"):
        load_dataset(path, image_root=str(images))  # a missing image is still a clear error ...
    ds = load_dataset(path, image_root=str(images), on_bad_example="skip")  # ... or a counted skip
    assert ds["image_path"] == [str(images / "sub" / "b.png")]
    assert [row for _, row, _ in ds.bad_examples["missing_image"]] == [2]
    from mmr1kit.config import MMR1Config

    assert len(load_dataset(path, "train", MMR1Config(image_root=str(images), on_bad_example="skip"))) == 1
    with pytest.raises(DatasetError, match="image_root"):
        load_dataset(path, image_root=str(tmp_path / "nowhere"))


def test_train_sample_size_cuts_the_train_split_only(counting_dir):
    from mmr1kit.config import MMR1Config

    config = MMR1Config(train_sample_size=10)
    assert len(load_dataset(counting_dir, "train", config)) == 10
    assert len(load_dataset(counting_dir, "test", config)) == 32  # the held-out split stays whole
    assert len(load_dataset(counting_dir, "test", train_sample_size=5)) == 32


def test_missing_image_names_the_path_it_looked_for(image_dir):
    path = _write(image_dir, [{"problem": "q", "solution": "1", "image": "sub/nope.png"}])
    with pytest.raises(DatasetError, match=str(image_dir / "sub" / "nope.png")):
        load_dataset(path)


def test_corrupt_image_and_duplicate_id(image_dir):
    (image_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        {"problem": "q", "solution": "1", "image": "bad.png", "id": "a"},
        {"problem": "q", "solution": "1", "image": "ok.png", "id": "b"},
        {"problem": "q", "solution": "1", "image": "ok.png", "id": "b"},
    ]
    path = _write(image_dir, rows)
    with pytest.raises(DatasetError, match="not a readable image"):
        load_dataset(path)
    ds = load_dataset(path, on_bad_example="skip")
    assert ds["id"] == ["b"]
    assert set(ds.bad_examples) == {"bad_image", "bad_id"}
    (file, row, message), = ds.bad_examples["bad_id"]
    assert (file, row) == (str(path), 3) and "duplicate id" in message


def test_invalid_json_lines(image_dir):
    path = image_dir / "d.jsonl"
    path.write_text('{"problem": "q", "solution": "1", "image": "ok.png"}\n{"problem": "q", "sol\n')
    with pytest.raises(DatasetError, match="row 2.*invalid JSON"):
        load_dataset(path)
    assert len(load_dataset(path, on_bad_example="skip")) == 1


def test_nothing_there(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.json")
    with pytest.raises(DatasetError, match="expected train.json"):
        load_dataset(tmp_path)


def test_card_without_its_files_names_them_and_gives_its_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the card's data_dir (data/refcoco) is relative: nothing there
    card = Path(__file__).resolve().parent.parent / "data_cards" / "refcoco.md"
    with pytest.raises(DatasetError) as info:
        load_dataset(card, "val")
    message = str(info.value)
    assert "split 'val' is not downloaded; 4 of the card's 4 files are missing" in message
    for name in ("train", "val", "testA", "testB"):
        assert f"data/refcoco/{name}.json" in message
    assert f"relative to {tmp_path}" in message
    assert "    from mmr1kit.data.converters import convert_refer, convert_refcoco" in message  # the card's recipe
    assert 'convert_refcoco("lmms-lab/RefCOCO", "data/refcoco", split="val")' in message
    (tmp_path / "data" / "refcoco").mkdir(parents=True)
    (tmp_path / "data" / "refcoco" / "train.json").write_text("[]")
    with pytest.raises(DatasetError, match="3 of the card's 4 files are missing"):
        load_dataset(card, "val")


def _corpus(root):
    """One malformed row per case of issue #7, plus good rows; returns (path, expected reason per bad row)."""
    Image.new("RGB", (32, 32), "white").save(root / "ok.png")
    Image.new("P", (32, 32)).save(root / "palette.png")  # unsupported mode for the model: converted to RGB
    Image.new("I;16", (32, 32)).save(root / "sixteen.png")
    full = (root / "ok.png").read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / "empty.png").write_bytes(b"")
    big = Image.new("1", (9000, 9000))  # 81 Mpx: over the decompression-bomb guard, tiny on disk
    big.save(root / "huge.png")
    good = lambda i, img="ok.png": json.dumps({"id": f"g{i}", "problem": "q", "solution": "1", "image": img})
    lines = [
        good(0),
        good(1, "palette.png"),
        good(2, "sixteen.png"),
        '{"id": "j", "problem": "q", "solution": ',  # invalid JSON
        json.dumps({"id": "m", "solution": "1", "image": "ok.png"}),  # missing field
        json.dumps({"id": "t", "problem": ["q"], "solution": "1", "image": "ok.png"}),  # wrong type
        json.dumps({"id": "e", "problem": "  ", "solution": "1", "image": "ok.png"}),  # empty problem
        json.dumps({"id": "f", "problem": "q", "solution": "1", "image": "gone.png"}),  # missing image file
        json.dumps({"id": "c", "problem": "q", "solution": "1", "image": "truncated.png"}),  # truncated image
        json.dumps({"id": "z", "problem": "q", "solution": "1", "image": "empty.png"}),  # zero-byte image
        json.dumps({"id": "h", "problem": "q", "solution": "1", "image": "huge.png"}),  # decompression bomb
        json.dumps({"id": "x", "problem": "q", "solution": "1", "image": "../outside.png"}),  # outside, absent
        good(0),  # duplicate id
    ]
    path = root / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    expected = {"invalid_json": [4], "missing_field": [5], "bad_problem": [6, 7], "missing_image": [8, 12],
                "bad_image": [9, 10, 11], "bad_id": [13]}
    return path, expected


def test_bad_data_corpus_error_mode_stops_at_the_first_bad_row(tmp_path):
    path, _ = _corpus(tmp_path)
    with pytest.raises(DatasetError, match="row 4.*invalid JSON"):
        load_dataset(path)


def test_bad_data_corpus_skip_mode_counts_every_reason(tmp_path):
    path, expected = _corpus(tmp_path)
    ds = load_dataset(path, on_bad_example="skip")
    assert ds["id"] == ["g0", "g1", "g2"]
    assert {k: [row for _, row, _ in v] for k, v in ds.bad_examples.items()} == expected
    assert all(ds[i]["image"].mode == "RGB" for i in range(3))  # palette and 16-bit images converted on decode
    assert "outside.png" in ds.bad_examples["missing_image"][-1][2]
