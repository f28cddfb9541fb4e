"""The compatibility matrix: every buildable tiny family trains, records, resumes, evaluates and browses.

One parametrized test per family (`mmr1kit.families.FAMILIES`), all through the same code with no branch on the
family: two GRPO steps on rows of two images each (checkpoint after each step), the raw run record, a resume from
checkpoint-1 that reproduces step 2, evaluation of checkpoint-2 on one- and two-image rows, and the rollout
browser's data. The README's "Model families" table reports these tests.
"""

import json
import shutil

import pandas as pd
import pytest
import torch

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset
from mmr1kit.evaluate import evaluate, run_models
from mmr1kit.families import FAMILIES
from mmr1kit.models import load_policy, tiny_vlm
from mmr1kit.rollout_groups import group_table
from mmr1kit.trainer import MMR1Trainer
from mmr1kit.widgets import group_view

SIZE = dict(hidden_size=64, vision_hidden_size=32)  # as tests/conftest.py: the cache is shared with it
# Parameters that get no gradient by the family's design: LLaVA and InternVL read the vision tower's last hidden
# state before its final norm; Gemma 3 / SigLIP's pooling head and Idefics3's final norm are likewise unused.
UNUSED_BY_DESIGN = ("post_layernorm", "vision_tower.head", "vision_model.head")


def length_reward(completions, **kwargs):
    """Graded (a random tiny model scores 0 on accuracy everywhere, which would leave every advantage 0)."""
    return [len(c[0]["content"]) / 10.0 for c in completions]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """`(train folder, train rows, test rows with one image, test rows with two)`, loaded once for all families."""
    from mmr1kit.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("counting_multi")
    write_dataset("counting_multi", root, n=8, seed=0, split="train", image_size=56)
    write_dataset("counting_multi", root, n=4, seed=1, split="test", image_size=56)
    single = write_dataset("counting", root / "single", n=4, seed=1, split="test", image_size=56).parent
    return root, load_dataset(root), load_dataset(single, "test"), load_dataset(root, "test")


def _config(model, data_dir, run_dir, **overrides):
    return MMR1Config.from_dict(dict(
        model_name_or_path=str(model), dataset=str(data_dir), run_dir=str(run_dir), max_steps=2, save_steps=1,
        save_total_limit=None, learning_rate=1e-2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, beta=0.04, exact_kl_every=0, warmup_steps=0, seed=0, **overrides))


def _raw(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_family_trains_resumes_evaluates_and_browses(arch, data, tmp_path):
    data_dir, train, one_image, two_images = data
    model = tiny_vlm(arch=arch, **SIZE)
    assert json.loads((model / "config.json").read_text())["model_type"] == arch
    config = _config(model, data_dir, tmp_path / "run")
    trainer = MMR1Trainer(reward_funcs=[length_reward], args=config, train_dataset=train)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    # both images of every row reach the loss: the vision tower learns, and at step 1 (policy = reference) the
    # reference pass and the loss pass saw the same inputs, so the KL is exactly 0
    unchanged = [n for n, p in trainer.model.named_parameters()
                 if torch.equal(p, before[n]) and not any(u in n for u in UNUSED_BY_DESIGN)]
    assert unchanged == []
    metrics = _raw(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and metrics[0]["kl"] == 0.0 and metrics[1]["grad_norm"] > 0
    rollouts = _raw(tmp_path / "run" / "rollouts.jsonl")
    assert len(rollouts) == 16 and {r["step"] for r in rollouts} == {1, 2}
    for r in rollouts:  # the run record references every image of the row
        assert len(r["images"]) == 2 and r["image"] == r["images"][0] and r["images"][1].endswith("_1.png")

    # resume from checkpoint-1 in a copy of the run: every weight is restored and step 2 is reproduced
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed_dir)
    checkpoint_1 = str(resumed_dir / "checkpoints" / "checkpoint-1")
    again = MMR1Trainer(reward_funcs=[length_reward], train_dataset=train,
                        args=_config(model, data_dir, resumed_dir, resume_from_checkpoint=checkpoint_1))
    again.train(resume_from_checkpoint=checkpoint_1)
    resumed = _raw(resumed_dir / "metrics.jsonl")
    assert [m["step"] for m in resumed] == [1, 2]
    for key in ("loss", "reward", "kl", "entropy", "grad_norm"):
        assert resumed[1][key] == pytest.approx(metrics[1][key], rel=1e-4, abs=1e-6), key
    second = [r["completion"] for r in _raw(resumed_dir / "rollouts.jsonl") if r["step"] == 2]
    assert second == [r["completion"] for r in rollouts if r["step"] == 2]

    # evaluation of the last checkpoint, on one image per row and on two
    checkpoint = load_policy(run_models(tmp_path / "run")["checkpoint-2"], dtype=torch.float32)
    for dataset, n_images in ((one_image, 1), (two_images, 2)):
        result = evaluate(checkpoint, dataset, task="auto", max_new_tokens=4)
        assert result.metrics["n"] == 4 and 0.0 <= result.metrics["accuracy"] <= 1.0  # reloaded, generated, scored
        assert ("images" in result.records) == (n_images == 2)

    # the rollout browser's data (drawing it is family-independent: tests/test_media.py renders it)
    frame = pd.DataFrame(rollouts)
    table = group_table(frame)
    assert len(table) == 4 and (table["n"] == 4).all()
    view = group_view(frame, 2, 1)
    assert view["images"] == rollouts[8 + 4]["images"] and len(view["completions"]) == 4
