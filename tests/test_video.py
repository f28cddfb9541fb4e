"""Video rows in GRPO training (mmr1kit.video): the hook's log-probs are the model's, and video families train."""

import json
from pathlib import Path

import pytest
import torch
from test_families import SIZE, length_reward  # the family matrix's model sizes (shared cache) and graded reward

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset, read_card
from mmr1kit.data.media import conversation
from mmr1kit.families import FAMILIES
from mmr1kit.models import tiny_vlm
from mmr1kit.trainer import MMR1Trainer

VIDEO_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The `frame_change` task: 8 training clips of 4 frames (56 px), as frame lists."""
    from mmr1kit.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("frame_change")
    write_dataset("frame_change", root, n=8, seed=0, split="train", image_size=56)
    return root


def _trainer(arch, clips, run_dir, steps=2):
    config = MMR1Config.from_dict(dict(
        model_name_or_path=str(tiny_vlm(arch=arch, **SIZE)), dataset=str(clips), run_dir=str(run_dir),
        max_steps=steps, save_strategy="no", learning_rate=1e-2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, beta=0.04, warmup_steps=0))
    return MMR1Trainer(reward_funcs=[length_reward], args=config, train_dataset=load_dataset(clips))


def test_only_the_qwen_families_are_video_families():
    from mmr1kit.capabilities import video_support
    from mmr1kit.models import load_processor

    supported = {a for a in FAMILIES if video_support(load_processor(tiny_vlm(arch=a, **SIZE)),
                                                      tiny_vlm(arch=a, **SIZE)) is None}
    assert supported == set(VIDEO_FAMILIES)
    card = read_card(Path(__file__).resolve().parents[1] / "data_cards" / "synthetic_frame_change.md")
    assert set(card["mmr1kit"]["families"]) == supported  # the video card names exactly these


@pytest.mark.slow
def test_hooked_log_probs_equal_a_direct_forward_of_the_video(clips, tmp_path):
    trainer = _trainer("qwen2_5_vl", clips, tmp_path / "run")
    rows = [trainer.train_dataset[i] for i in (0, 0, 5, 5)]
    out = trainer._generate_and_score_completions(rows)
    assert len(out["video_inputs"]) == 4 and "ref_per_token_logps" in out  # per row, to travel with the batch
    model, processor = trainer.model, trainer.processing_class
    for i, row in enumerate(rows):  # one row at a time, straight through the processor and the model
        messages, metadata = conversation(row)
        inputs = processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt",
                                               processor_kwargs={"video_metadata": metadata,
                                                                 "do_sample_frames": False})
        completion = out["completion_ids"][i][out["completion_mask"][i].bool()]
        ids = torch.cat([inputs["input_ids"][0], completion])[None]
        types = torch.cat([inputs["mm_token_type_ids"][0], torch.zeros_like(completion)])[None]
        video = {k: inputs[k] for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")}
        with torch.no_grad():
            logits = model(input_ids=ids, mm_token_type_ids=types, **video).logits[0, -len(completion) - 1 : -1]
        direct = torch.log_softmax(logits.float(), -1).gather(-1, completion[:, None])[:, 0]
        hooked = out["ref_per_token_logps"][i][: len(completion)]
        assert torch.allclose(hooked, direct, atol=1e-4), (i, (hooked - direct).abs().max())
    # without the hook, TRL would score the same tokens with no video at all: different log-probs
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].size(1)
    with torch.no_grad(), trainer._video.active(out["video_inputs"]):
        again, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, T)
    with torch.no_grad():
        blind, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, T)
    valid = out["completion_mask"].bool()
    assert torch.allclose(again[valid], out["ref_per_token_logps"][valid], atol=1e-4)
    assert not torch.allclose(blind[valid], again[valid], atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", VIDEO_FAMILIES)
def test_video_family_trains_on_the_frame_change_task(arch, clips, tmp_path):
    trainer = _trainer(arch, clips, tmp_path / "run", steps=3 if arch == "qwen2_5_vl" else 2)
    # a sampled video token would have no features in the scoring forward: never sampled (as TRL does for images)
    assert trainer.model.config.video_token_id in trainer.generation_config.suppress_tokens
    tower = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "visual" in n}
    trainer.train()
    # the frames reach the loss pass (the vision tower sees nothing else) and the reference pass saw them alike
    assert tower and all(not torch.equal(p, tower[n]) for n, p in trainer.model.named_parameters() if n in tower)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["kl"] == 0.0 and all(m["grad_norm"] > 0 for m in metrics)
    rollouts = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 8 * len(metrics)
    assert all(len(r["video"]) == 4 and r["image"] is None and "images" not in r for r in rollouts)
