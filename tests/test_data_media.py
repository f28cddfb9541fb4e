"""Rows with several images or a video (mmr1kit.data.media): loading, placeholders, templating, bad rows."""

import json

import pytest
from PIL import Image

from mmr1kit.data import DatasetError, load_dataset
from mmr1kit.data.media import conversation, rollout_media


@pytest.fixture
def folder(tmp_path):
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (56, 56), color).save(tmp_path / f"{i}.png")
    return tmp_path


def _load(folder, rows, **kwargs):
    (folder / "train.json").write_text(json.dumps(rows))
    return load_dataset(folder / "train.json", **kwargs)


def _row(i, **media):
    return {"id": f"r{i}", "problem": "How many red circles in the images together?", "solution": "1", **media}


def test_images_rows_become_an_images_column_and_single_image_rows_join_it(folder):
    ds = _load(folder, [_row(0, images=["0.png", "1.png"]), _row(1, image="2.png")])
    assert ds.features["images"].feature.__class__.__name__ == "Image"  # decoded lazily, like `image`
    first, second = ds[0], ds[1]
    assert [im.getpixel((0, 0)) for im in first["images"]] == [(255, 0, 0), (0, 128, 0)]
    assert first["image_paths"] == [str(folder / "0.png"), str(folder / "1.png")]
    assert first["image_path"] == str(folder / "0.png")  # `image` stays the first image
    assert len(second["images"]) == 1 and second["image_paths"] == [str(folder / "2.png")]
    assert first["prompt"] == [{"role": "user", "content": first["problem"]}]  # TRL puts the images first


def test_a_single_image_dataset_is_unchanged(folder):
    ds = _load(folder, [_row(0, image="0.png")])
    assert "images" not in ds.column_names and "image_paths" not in ds.column_names


def test_placeholders_place_each_image_and_the_template_renders_one_per_image(folder, qwen_path):
    from mmr1kit.models import load_processor

    problem = "Left: <image> right: <image> How many red ones?"
    ds = _load(folder, [_row(0, images=["0.png", "1.png"], problem=problem), _row(1, images=["2.png", "0.png"])])
    user = ds[0]["prompt"][-1]["content"]
    assert [p["type"] for p in user] == ["text", "image", "text", "image", "text"]
    assert ds[1]["prompt"][-1]["content"][:2] == [{"type": "image"}, {"type": "image"}]  # no placeholder: first
    messages, metadata = conversation(ds[0])
    assert metadata == [] and [p["image"].getpixel((0, 0)) for p in messages[-1]["content"]
                               if p["type"] == "image"] == [(255, 0, 0), (0, 128, 0)]
    text = load_processor(qwen_path).apply_chat_template([messages], add_generation_prompt=True, tokenize=False)[0]
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert "Left: <|vision_start|>" in text and "right: <|vision_start|>" in text


def test_placeholder_mismatch_names_the_row_or_is_counted(folder):
    rows = [_row(0, images=["0.png", "1.png"], problem="Only <image> here?"), _row(1, images=["0.png", "1.png"])]
    with pytest.raises(DatasetError, match=r"row 1, field 'problem'.*1 <image> placeholder\(s\) but the row has 2"):
        _load(folder, rows)
    ds = _load(folder, rows, on_bad_example="skip")
    assert ds["id"] == ["r1"] and len(ds.bad_examples["placeholder_mismatch"]) == 1


def test_bad_media_fields_are_named(folder):
    with pytest.raises(DatasetError, match=r"field 'images\[1\]'.*not found"):
        _load(folder, [_row(0, images=["0.png", "missing.png"])])
    with pytest.raises(DatasetError, match="non-empty list"):
        _load(folder, [_row(0, images=[])])
    with pytest.raises(DatasetError, match="one of 'image', 'images' or 'video'"):
        _load(folder, [_row(0, image="0.png", images=["1.png"])])
    with pytest.raises(DatasetError, match="fps.*positive"):
        _load(folder, [_row(0, video=["0.png", "1.png"], fps=0)])
    with pytest.raises(DatasetError, match="video file"):
        _load(folder, [_row(0, video="clip.txt")])
    with pytest.raises(DatasetError, match="image rows or video rows"):
        _load(folder, [_row(0, video=["0.png", "1.png"]), _row(1, image="2.png")])


def test_video_rows_keep_their_frames_and_fill_them_in_on_demand(folder):
    ds = _load(folder, [_row(0, video=["0.png", "1.png", "2.png"], fps=2, max_frames=2, problem="When? <video>")])
    row = ds[0]
    assert "image" not in ds.column_names and row["video"] == [str(folder / f"{i}.png") for i in range(3)]
    assert row["prompt"][-1]["content"] == [{"type": "text", "text": "When? "}, {"type": "video"}]
    messages, metadata = conversation(row)
    frames = messages[-1]["content"][1]["video"]
    assert [f.getpixel((0, 0)) for f in frames] == [(255, 0, 0), (0, 0, 255)]  # max_frames=2: first and last
    assert metadata == [{"fps": 2.0, "total_num_frames": 3, "frames_indices": [0, 2], "duration": 1.5}]
    assert rollout_media(row) == {"image": None, "video": row["video"]}


def test_a_video_file_row_is_sampled_at_its_fps_and_max_frames(folder):
    from mmr1kit.data.frames import write_video

    frames = [Image.open(folder / f"{i % 3}.png") for i in range(8)]  # red, green, blue, red, ... at 4 fps: 2 s
    write_video(frames, folder / "clip.mp4", fps=4)
    ds = _load(folder, [_row(0, video="clip.mp4", fps=2, max_frames=3)])
    assert ds[0]["video"] == str(folder / "clip.mp4") and ds[0]["video_fps"] == 2.0
    messages, metadata = conversation(ds[0])
    assert len(messages[-1]["content"][0]["video"]) == 3  # 2 fps of a 2 s clip = 4 frames, capped at 3
    assert metadata[0]["fps"] == 4.0 and metadata[0]["frames_indices"] == [0, 4, 6]
