"""What a model takes (mmr1kit.capabilities): video support, images per prompt, and the rows it refuses."""

import json

import pytest
from PIL import Image

from mmr1kit.capabilities import max_images, video_support
from mmr1kit.config import MMR1Config
from mmr1kit.data import DatasetError, load_dataset
from mmr1kit.models import load_processor, tiny_vlm
from mmr1kit.trainer import MMR1Trainer


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "a.png")
    return tmp_path


def _rows(folder, rows):
    (folder / "train.json").write_text(json.dumps(rows))
    return folder


def _config(model, data, run_dir, **extra):
    return MMR1Config.from_dict(dict(model_name_or_path=str(model), dataset=str(data), run_dir=str(run_dir),
                                     max_steps=1, max_completion_length=16, **extra))


def test_video_support_is_read_from_processor_and_config(qwen_path, llava_path):
    assert video_support(load_processor(qwen_path), qwen_path) is None
    assert "LlavaProcessor (llava) takes no video" in video_support(load_processor(llava_path), llava_path)
    smol = tiny_vlm(arch="smolvlm", hidden_size=64, vision_hidden_size=32)
    assert "give the frames as an 'images' list" in video_support(load_processor(smol), smol)


def test_max_images_is_what_fits_in_the_context(llava_path):
    processor = load_processor(llava_path)
    limit = max_images(processor, llava_path, max_pixels=112 * 112, max_completion_length=16)

    def tokens(n):
        content = [{"type": "image", "image": Image.new("RGB", (112, 112))}] * n + [{"type": "text", "text": "x"}]
        return len(processor.apply_chat_template([[{"role": "user", "content": content}]], add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"][0])

    assert 10 < limit < 100  # 2048 positions, 65 tokens per CLIP image
    assert tokens(limit) + 16 <= 2048 < tokens(limit + 1) + 16


def test_a_video_row_for_a_model_without_video_names_the_row(llava_path, folder, tmp_path):
    data = _rows(folder, [{"id": "clip-7", "problem": "When?", "solution": "2", "video": ["a.png", "a.png"]}])
    for mode in ("error", "skip"):  # skipping every row would leave nothing to train: the error says why
        with pytest.raises(DatasetError, match=r"row id 'clip-7', field 'video'.*LlavaProcessor \(llava\) takes no"):
            config = _config(llava_path, data, tmp_path / mode, on_bad_example=mode)
            MMR1Trainer(args=config, train_dataset=load_dataset(data, config=config))


def test_too_many_images_is_an_error_or_a_counted_skip(llava_path, folder, tmp_path):
    rows = [{"id": "long", "problem": "How many?", "solution": "1", "images": ["a.png"] * 40}]
    rows += [{"id": f"r{i}", "problem": "How many?", "solution": "1", "images": ["a.png"] * 2} for i in range(3)]
    data = _rows(folder, rows)
    config = _config(llava_path, data, tmp_path / "error")
    with pytest.raises(DatasetError, match=r"row id 'long', field 'images'.*40 images; llava takes at most \d+"):
        MMR1Trainer(args=config, train_dataset=load_dataset(data, config=config))
    config = _config(llava_path, data, tmp_path / "skip", on_bad_example="skip")
    trainer = MMR1Trainer(args=config, train_dataset=load_dataset(data, config=config))
    assert trainer.train_dataset["id"] == ["r0", "r1", "r2"]
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["train_rows"] == 3 and manifest["bad_examples"]["too_many_images"]["count"] == 1
    assert "40 images" in manifest["bad_examples"]["too_many_images"]["first"][0][2]
