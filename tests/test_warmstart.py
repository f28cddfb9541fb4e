"""The warm start's SFT rows (mmr1kit.warmstart.sft_dataset) keep every image of a row; video rows are refused."""

import json

import pytest
from PIL import Image

from mmr1kit.data import load_dataset
from mmr1kit.warmstart import sft_dataset


def test_sft_rows_keep_every_image_and_refuse_video(tmp_path):
    for i, color in enumerate(("red", "blue")):
        Image.new("RGB", (56, 56), color).save(tmp_path / f"{i}.png")
    rows = [{"id": "a", "problem": "How many?", "solution": "1", "images": ["0.png", "1.png"]}]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    sft = sft_dataset(load_dataset(tmp_path / "train.json"), labels=["2"])
    assert sorted(sft.column_names) == ["completion", "images", "prompt"]
    assert len(sft[0]["images"]) == 2 and sft[0]["completion"] == [{"role": "assistant", "content": "<answer>2</answer>"}]
    (tmp_path / "video.json").write_text(json.dumps([{**rows[0], "images": None, "video": ["0.png", "1.png"]}]))
    with pytest.raises(ValueError, match="no video rows"):
        sft_dataset(load_dataset(tmp_path / "video.json"))
