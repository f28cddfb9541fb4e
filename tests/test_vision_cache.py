"""Each image encoded once per forward pass (`mmr1kit.vision_cache`): the outputs are the model's own, training follows
TRL's path to 1e-6, and the counts say what was shared (preprocessing: `tests/test_preprocess_cache.py`).

Runs in both tested environments: `make test` (transformers 5.23) and `make test-vllm` (`.venv-vllm`, 5.17).
"""

from collections import Counter

import pytest
import torch
from test_families import SIZE  # the family matrix's model sizes (shared cache)
from test_preprocess_cache import check_preprocessing, processor_calls, rows  # the same rows, and their check

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.families import FAMILIES
from mmr1kit.models import load_policy, load_processor, tiny_vlm
from mmr1kit.trainer import MMR1Trainer
from mmr1kit.vision_cache import feature_module, shared_image_features

# Families whose image processor pads each row's images into one `(rows, images, C, H, W)` tensor: neither cache
# recognises that layout, so their images take TRL's path (counted as fallback).
PER_ROW_LAYOUT = {"idefics3", "smolvlm"}


def forward(model, batches, share: bool, weights: torch.Tensor):
    """Logits of `batches` (the chunks of one pass) and the gradients of a loss on them, with or without sharing."""
    model.zero_grad()
    stats = Counter()
    with shared_image_features(model, stats, enabled=share):
        logits = [model(**batch).logits for batch in batches]
    loss = sum((lg.float() * weights[: lg.size(1)]).pow(2).mean() for lg in logits)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [lg.detach() for lg in logits], grads, stats


def check_forward(path, chunks: bool = False) -> Counter:
    """Shared features give the model's own logits and (trainable vision tower) gradients; returns the counts."""
    processor, model = load_processor(path), load_policy(path, dtype=torch.float32)
    model.train()
    images = rows()
    batches = [processor_calls(processor, images)[1]]
    if chunks:  # two forwards in one pass, as TRL's chunked scoring: the shared image is encoded in the first only
        batches = [processor_calls(processor, images[:2])[1], processor_calls(processor, images[2:])[1]]
    weights = torch.randn(max(b["input_ids"].size(1) for b in batches), 1, generator=torch.Generator().manual_seed(0))
    shared, shared_grads, stats = forward(model, batches, True, weights)
    plain, plain_grads, _ = forward(model, batches, False, weights)
    assert "get_image_features" not in vars(feature_module(model))  # nothing left behind
    for a, b in zip(shared, plain):
        # an image's features depend on the other images of its call by rounding only (matrix products of another
        # size: a few float32 ulps on the tiny Qwen2.5-VL's features, nothing on LLaVA's)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert shared_grads.keys() == plain_grads.keys()
    vision = [n for n in plain_grads if not n.startswith(("model.language_model.", "lm_head"))]
    assert vision and any(plain_grads[n].abs().sum() > 0 for n in vision)
    for name, grad in plain_grads.items():  # a shared image's gradient is the sum over the rows that use it
        # summed in another order: equal to rounding, relative to the tensor (single elements can cancel)
        assert (shared_grads[name] - grad).norm() <= 1e-5 * grad.norm() + 1e-9, name
    return stats


@pytest.mark.parametrize("fixture", ["qwen_path", "llava_path"])
@pytest.mark.parametrize("chunks", [False, True])
def test_shared_features_give_the_models_logits_and_gradients(fixture, chunks, request):
    stats = check_forward(request.getfixturevalue(fixture), chunks)
    assert stats == Counter(images=5, encoded=3)


def test_calls_needing_a_draw_or_a_gradient_per_copy_take_trls_path(qwen_path):
    processor, model = load_processor(qwen_path), load_policy(qwen_path, dtype=torch.float32)
    batch = processor_calls(processor, rows())[1]
    # pixels with a gradient of their own: each copy gets its own, as on TRL's path
    pixels = batch["pixel_values"].clone().requires_grad_()
    stats = Counter()
    with shared_image_features(model, stats):
        model(**{**batch, "pixel_values": pixels}).logits.sum().backward()
    assert stats == Counter(images=5, encoded=5, fallback_images=5) and pixels.grad.abs().sum() > 0
    # dropout in the vision tower: each copy would need its own draw (detected from the vision config)
    model.config.vision_config.attention_dropout = 0.1  # read by the check only: the tower's own draws stay off
    for training, expected in ((True, Counter(images=5, encoded=5, fallback_images=5)),
                               (False, Counter(images=5, encoded=3))):
        model.train(training)
        stats = Counter()
        with torch.no_grad(), shared_image_features(model, stats):
            logits = model(**batch).logits
        with torch.no_grad():
            torch.testing.assert_close(logits, model(**batch).logits, rtol=1e-5, atol=1e-5)
        assert stats == expected


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_every_family_is_exact_shared_or_counted_as_fallback(arch, monkeypatch):
    try:
        path = tiny_vlm(arch=arch, **SIZE)
    except ImportError as e:  # SmolVLM's processor needs num2words, absent from .venv-vllm
        pytest.skip(f"{arch} cannot be built here: {e}")
    check_preprocessing(path, monkeypatch, cached=arch not in PER_ROW_LAYOUT)
    stats = check_forward(path)
    # per-row layouts: one call of 4 rows, all taken TRL's way; the others: 5 images, 3 distinct
    expected = Counter(images=4, encoded=4, fallback_images=4) if arch in PER_ROW_LAYOUT else Counter(images=5, encoded=3)
    assert stats == expected


# --- training against TRL's path ----------------------------------------------------------------------------------


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


class Spy(MMR1Trainer):
    """MMR1Trainer keeping every log-prob pass and every generation batch's completions."""

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        self.passes.append(out[0].detach().clone())
        return out

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.completions.append(out["completion_ids"].clone())
        return out


def trainer(path, data_dir, run_dir, group, once, freeze=False, steps=3):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    config = MMR1Config.from_dict({
        "run_dir": str(run_dir), "max_steps": steps, "learning_rate": 1e-2, "warmup_steps": 0, "seed": 0,
        "per_device_train_batch_size": 2 * group, "num_generations": group, "max_completion_length": 4,
        "save_strategy": "no", "beta": 0.04, "exact_kl_every": 1, "encode_images_once": once})
    dataset = load_dataset(data_dir, "train", config)
    t = Spy(model=str(path), reward_funcs=[length_reward], args=config, train_dataset=dataset, record=False)
    t.remove_callback(ProgressCallback)
    t.remove_callback(PrinterCallback)
    t.passes, t.completions = [], []
    # everything of the VLM but its language model: the vision tower and the projector
    t.vision = {n: p for n, p in feature_module(t.model).named_parameters() if not n.startswith("language_model.")}
    t.vision_before = {n: p.detach().clone() for n, p in t.vision.items()}
    for p in t.vision.values():
        p.requires_grad_(not freeze)
    return t


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [False, True], ids=["tower-trained", "tower-frozen"])
@pytest.mark.parametrize("group", [4, 8])
@pytest.mark.parametrize("fixture", ["qwen_path", "llava_path"])
def test_training_equals_trls_path_for_three_steps(fixture, group, freeze, request, counting_dir, tmp_path):
    path = request.getfixturevalue(fixture)
    once = trainer(path, counting_dir, tmp_path / "once", group, True, freeze)
    once.train()
    plain = trainer(path, counting_dir, tmp_path / "plain", group, False, freeze)  # seeded afresh when built
    plain.train()
    logged = [[h for h in t.state.log_history if "loss" in h] for t in (once, plain)]
    assert len(logged[0]) == len(logged[1]) == 3
    for step, (a, b) in enumerate(zip(*logged)):
        for key in ("loss", "grad_norm", "kl", "kl/exact", "entropy", "reward"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (step, key)
        # three passes through the vision tower a step (generation prefill, reference, loss), 2 distinct images each
        assert (a["vision/encoded"], a["vision/encoded_by_trl"]) == (3 * 2, 3 * 2 * group)
        assert a["vision/preprocessed"] == (2 * 2 * group if step == 0 else 2)  # step 1: TRL's calls teach the layout
        assert a["vision/fallback_images"] == a["vision/unshared_rows"] == 0
        assert not any(k.startswith("vision/") for k in b)  # the option off: TRL's path, no counts
    for a, b in zip(once.completions, plain.completions):
        assert torch.equal(a, b)  # generation saw the same features: the same tokens
    assert len(once.passes) == len(plain.passes) == 3 * 2  # the reference pass and the loss pass
    for i, (a, b) in enumerate(zip(once.passes, plain.passes)):  # log-probs (about -7): a few float32 ulps
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"pass {i}")
    moved = [n for n, p in once.vision.items() if not torch.equal(p, once.vision_before[n])]
    assert bool(moved) != freeze  # a trainable tower learnt through the shared features; a frozen one stayed


@pytest.mark.slow
def test_a_group_whose_images_differ_is_scored_as_on_trls_path(qwen_path, counting_dir, tmp_path):
    # bad input: one group's rows hold different images (a dataset that varies the image within a group)
    runs = {}
    for once in (True, False):
        t = trainer(qwen_path, counting_dir, tmp_path / str(once), 2, once)
        t.model.train()
        data = t.train_dataset
        batch = [data[0], data[0], {**data[1], "image": data[2]["image"]}, data[1]]
        torch.manual_seed(0)
        runs[once] = (t, t._generate_and_score_completions(batch))
    (t, shared), (_, plain) = runs[True], runs[False]
    assert torch.equal(shared["completion_ids"], plain["completion_ids"])
    torch.testing.assert_close(shared["ref_per_token_logps"], plain["ref_per_token_logps"], rtol=0, atol=0)
    # 3 distinct images: the first group's shared one, and the second group's two, each for its row alone
    assert t._preprocess_cache.stats["unshared_rows"] == 2
    assert t._encode_stats == Counter(images=2 * 4, encoded=2 * 3)  # generation prefill and reference pass
