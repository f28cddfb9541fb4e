import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmr1kit import models

MESSAGES = [
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "How many red circles are there?"}],
    }
]


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_built_model_reloads_with_auto_classes_and_generates_with_two_images(arch):
    path = models.tiny_vlm(arch=arch, hidden_size=64, vision_hidden_size=32)  # the sizes of tests/conftest.py
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert model.config.model_type == arch
    images = [Image.new("RGB", (112, 112), "white"), Image.new("RGB", (80, 112), "red")]
    content = [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]}, MESSAGES[0]["content"][1]]
    inputs = processor.apply_chat_template([[{**MESSAGES[0], "content": content}]], add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    image_token = getattr(model.config, "image_token_id", None) or model.config.image_token_index
    one = processor.apply_chat_template([[{**MESSAGES[0], "content": content[1:]}]], add_generation_prompt=True,
                                        tokenize=True, return_dict=True, return_tensors="pt")
    n_two, n_one = ((x["input_ids"] == image_token).sum().item() for x in (inputs, one))
    assert n_one > 0 and n_two > n_one  # both images really reach the model
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_tiny_names_resolve_to_any_family():
    from mmr1kit.models import resolve_model

    path = resolve_model("tiny-idefics3")
    assert json.loads((models.cache_dir() / "models" / path.split("/")[-1] / "config.json").read_text())[
        "model_type"] == "idefics3"
    assert resolve_model("tiny-gpt2") == "tiny-gpt2"  # not a family: a path / hub id as given


def test_tokenizer_roundtrip_is_lossless_and_specials_are_single_tokens(qwen_path):
    tok = AutoProcessor.from_pretrained(qwen_path).tokenizer
    text = 'Héllo <think>two</think><answer>3</answer> [1, 2, 30, 44] {"bbox_2d": [5]} ✓ \x00'
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level BPE: any string survives, no unknown token
    for special in ("<|im_end|>", "<|image_pad|>", "<|vision_start|>", "<|box_start|>"):
        assert len(tok(special)["input_ids"]) == 1


def test_build_is_deterministic_per_seed(tmp_path):
    a = models.build_tiny_vlm(tmp_path / "a", seed=3, hidden_size=32, vision_hidden_size=32)
    b = models.build_tiny_vlm(tmp_path / "b", seed=3, hidden_size=32, vision_hidden_size=32)
    c = models.build_tiny_vlm(tmp_path / "c", seed=4, hidden_size=32, vision_hidden_size=32)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert json.loads((a / "mmr1kit_build.json").read_text())["initializer_range"] == 0.1


def vocabulary_fingerprint(tok) -> str:
    return hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()[:16]


def test_tokenizer_is_pinned_and_independent_of_the_template_registry(monkeypatch):
    """The demo's recorded results belong to one tiny model: its vocabulary must not move when a template does."""
    from mmr1kit.data import templates

    tok = models.build_tokenizer()
    # the vocabulary the demo's and benchmarks' results were measured with (<|image_pad|> = 699)
    assert (len(tok), tok.convert_tokens_to_ids("<|image_pad|>"), vocabulary_fingerprint(tok)) == (
        706, 699, "e5a2f44b630ceb36"), "the tiny model's tokenizer changed: re-measure the README's demo figures"
    monkeypatch.setitem(templates.SYSTEM_PROMPTS, "grounding", "Box it.You should output floats.Here: [x1, y1].")
    monkeypatch.setitem(templates.QUESTION_TEMPLATES, "new", "{question} Think step by step, then answer.")
    assert vocabulary_fingerprint(models.build_tokenizer()) == vocabulary_fingerprint(tok)


def test_cache_key_covers_the_tokenizer_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("MMR1KIT_CACHE", str(tmp_path))
    before = models.tiny_vlm(hidden_size=32, vision_hidden_size=32)
    monkeypatch.setattr(models, "TOKENIZER_PROMPTS", (*models.TOKENIZER_PROMPTS, "Count the shapes, then box them."))
    after = models.tiny_vlm(hidden_size=32, vision_hidden_size=32)
    assert after != before  # a stale cache never serves a model of another vocabulary
    vocab = (json.loads((p / "tokenizer.json").read_text())["model"]["vocab"] for p in (before, after))
    assert next(vocab) != next(vocab)


def test_cache_builds_once(qwen_path):
    stamp = (qwen_path / "model.safetensors").stat().st_mtime_ns
    again = models.tiny_vlm(arch="qwen2_5_vl", hidden_size=64, vision_hidden_size=32)
    assert again == qwen_path and (again / "model.safetensors").stat().st_mtime_ns == stamp
    other = models.tiny_vlm(arch="qwen2_5_vl", hidden_size=64, vision_hidden_size=32, seed=1)
    assert other != qwen_path  # the key covers every build parameter


def test_unknown_size_and_arch_are_refused(tmp_path):
    with pytest.raises(ValueError, match="hidden"):
        models.build_tiny_vlm(tmp_path / "x", hiden_size=8)
    with pytest.raises(ValueError, match="arch"):
        models.build_tiny_vlm(tmp_path / "x", arch="gpt2")


def test_load_processor_sets_pixel_bounds(qwen_path):
    processor = models.load_processor(qwen_path, min_pixels=28 * 28, max_pixels=56 * 56)
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (28 * 28, 56 * 56)
    out = processor.image_processor(images=[Image.new("RGB", (112, 112))], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]]  # 112x112 resized down to 56x56 = 4x4 patches


def test_load_policy_dispatches_on_config_not_name(llava_path, tmp_path):
    renamed = tmp_path / "Qwen2.5-VL-looks-like-qwen"
    renamed.symlink_to(llava_path)
    assert type(models.load_policy(renamed, dtype=torch.float32)).__name__ == "LlavaForConditionalGeneration"


@pytest.mark.slow
def test_freeze_vision_tower_trains_everything_else(qwen_path, counting_dir, tmp_path):
    from test_trainer import UNUSED_BY_DESIGN, train_tiny

    original = models.load_policy(qwen_path)
    tower = {n for n, _ in models.vision_tower(original).named_parameters()}
    original = dict(original.named_parameters())
    trainer, before = train_tiny(qwen_path, counting_dir, tmp_path / "run", steps=2, freeze_vision_tower=True,
                                 save_strategy="no", warmup_steps=0)
    params = dict(trainer.model.named_parameters())
    frozen = {n for n in params if n.startswith("model.visual.")}
    assert frozen and {n.removeprefix("model.visual.") for n in frozen} == tower
    assert all(torch.equal(params[n], original[n]) and not params[n].requires_grad for n in frozen)
    changed = {n for n in before if not torch.equal(params[n], before[n])}
    assert changed == {n for n in params if n not in frozen and not any(u in n for u in UNUSED_BY_DESIGN)}
    with pytest.raises(ValueError, match="no vision tower"):
        models.freeze_vision_tower(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_processes_that_start_at_once_build_the_cached_model_once(tmp_path):
    """The points of a sweep or the tasks of a Slurm array start together on a cold cache: one builds, the others
    wait for it (`cache_lock`) and load what it built."""
    code = ("import sys; from mmr1kit.models import tiny_vlm; from transformers import AutoModelForImageTextToText; "
            "p = tiny_vlm(hidden_size=32, vision_hidden_size=32); AutoModelForImageTextToText.from_pretrained(p); "
            "print(p)")
    env = {**os.environ, "MMR1KIT_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    built = {out.strip() for out, _ in outputs}
    assert len(built) == 1
    name = Path(built.pop()).name
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [name, f"{name}.lock"]  # no partial build
