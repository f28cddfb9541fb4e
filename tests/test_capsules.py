"""Capsules (`mmr1kit.capsules`): what a real tiny run keeps every `capsule_every` steps, read back from the raw files
and checked against the run's own record (metrics.jsonl, rollouts.jsonl, its checkpoints)."""

import json

import pytest
import torch
from raw_records import raw_rows, raw_steps
from safetensors.torch import load_file

from mmr1kit.capsules import capsule_dir, capsule_steps, read_capsule
from mmr1kit.models import load_policy, load_processor

pytest_plugins = ["runs_fixture"]  # capsule_run: capsules of steps 2 and 3, checkpoint-2


@pytest.mark.slow
def test_capsules_at_every_nth_step_and_the_last(capsule_run):
    assert capsule_steps(capsule_run) == [2, 3]
    assert sorted(p.name for p in (capsule_run / "capsules").iterdir()) == ["step-2", "step-3"]  # no leftovers
    for step in (2, 3):
        folder = capsule_dir(capsule_run, step)
        assert sorted(p.name for p in folder.iterdir()) == ["batch.safetensors", "capsule.json", "model.safetensors",
                                                            "optimizer.safetensors"]
        record = json.loads((folder / "capsule.json").read_text())
        assert record["bytes"] == {name: (folder / name).stat().st_size for name in record["bytes"]}
        metrics = next(r for r in raw_rows(capsule_run, "metrics.jsonl") if r["step"] == step)
        # the learning rate the schedule gave this step's update, and its sampling temperature, as logged
        assert record["learning_rates"][0] == pytest.approx(metrics["learning_rate"], rel=1e-12)
        assert record["temperature"] == metrics["temperature"]
        assert record["optimizer"]["class"] == "AdamW" and record["micro_batches"] == 1


@pytest.mark.slow
def test_each_row_keeps_its_own_rewards_advantage_and_tokens(capsule_run):
    """TRL shuffles the generation batch before the loss: every capsule row must still be its own rollout."""
    record, (batch,) = read_capsule(capsule_run, 3)
    rollouts = [r for r in raw_rows(capsule_run, "rollouts.jsonl") if r["step"] == 3]  # in the round's order
    assert len(rollouts) == 8
    tokenizer = load_processor(record["model"]).tokenizer
    rows = record["rows"][0]
    assert sorted(r["rollout_index"] for r in rows) == list(range(8)) and {r["rollout_step"] for r in rows} == {3}
    for i, row in enumerate(rows):
        rollout = rollouts[row["rollout_index"]]
        assert (row["prompt_id"], row["image"]) == (rollout["prompt_id"], rollout["image"])
        rewards = [rollout[f"rewards/{name}"] for name in record["reward_funcs"]]
        assert batch["capsule_rewards"][i].tolist() == pytest.approx(rewards)
        assert batch["advantages"][i].item() == pytest.approx(rollout["advantage"], rel=1e-6, abs=1e-7)
        ids = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        assert tokenizer.decode(ids, skip_special_tokens=True) == rollout["completion"]
        assert int(batch["completion_mask"][i].sum()) == rollout["length"]
    # pixel values stored once per distinct image, given back one block per completion
    grid = batch["image_grid_thw"].prod(-1).tolist()
    assert batch["pixel_values"].shape[0] == sum(grid)
    stored = load_file(str(capsule_dir(capsule_run, 3) / "batch.safetensors"))
    assert len([k for k in stored if k.startswith("0.pixel_values.") and k != "0.pixel_values.rows"]) == 2


@pytest.mark.slow
def test_a_capsule_holds_the_weights_before_its_step(capsule_run):
    """checkpoint-2 holds the weights after step 2's update: the weights step 3's loss used, not step 2's."""
    checkpoint = load_policy(capsule_run / "checkpoints" / "checkpoint-2", dtype=torch.float32).state_dict()
    step3 = load_file(str(capsule_dir(capsule_run, 3) / "model.safetensors"))
    step2 = load_file(str(capsule_dir(capsule_run, 2) / "model.safetensors"))
    assert step3.keys() == checkpoint.keys()
    assert all(torch.equal(step3[k], checkpoint[k]) for k in checkpoint)
    assert not all(torch.equal(step2[k], checkpoint[k]) for k in checkpoint)
    moments = load_file(str(capsule_dir(capsule_run, 3) / "optimizer.safetensors"))
    assert {k.split(".", 1)[1] for k in moments} == {"step", "exp_avg", "exp_avg_sq"}
    assert {int(v) for k, v in moments.items() if k.endswith(".step")} == {2}  # AdamW after steps 1 and 2


@pytest.mark.slow
def test_resume_drops_the_dead_runs_later_capsules_and_keeps_one_per_step(qwen_path, grounding_dir, tmp_path):
    from runs_fixture import train_run  # after pytest_plugins registered the module (assertion rewriting)

    from mmr1kit.replay import replay

    exact = {"kl_approximator": "exact", "save_strategy": "steps", "save_steps": 2}  # the loss reads ref_hidden
    run = train_run(qwen_path, grounding_dir, tmp_path / "run", steps=3, capsule_every=1, **exact)
    assert capsule_steps(run) == [1, 2, 3]  # step 3 was kept after the last checkpoint (checkpoint-2) ...
    train_run(qwen_path, grounding_dir, run, steps=4, capsule_every=2, **exact,
              resume_from_checkpoint=str(run / "checkpoints" / "checkpoint-2"),
              allow_changes=["max_steps", "capsule_every"])
    # ... and the resumed run (capsules every 2 steps now) trained step 3 again without one: the dead run's is gone
    assert capsule_steps(run) == [1, 2, 4]
    assert raw_steps(run) == [1, 2, 3, 4]
    record, (batch,) = read_capsule(run, 4)
    assert {r["rollout_step"] for r in record["rows"][0]} == {4} and "ref_hidden" in batch
    assert not list((run / "capsules").glob(".step-*"))
    own = replay(run, 4).variants.iloc[0]  # the resumed run's capsule replays its own logged step
    logged = next(r for r in raw_rows(run, "metrics.jsonl") if r["step"] == 4)
    assert own["loss"] == pytest.approx(logged["loss"], rel=1e-6)
    assert own["grad_norm"] == pytest.approx(logged["grad_norm"], rel=1e-6)


@pytest.mark.slow
def test_video_rows_are_refused_when_the_trainer_is_built(qwen_path, tmp_path):
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import write_dataset
    from mmr1kit.trainer import MMR1Trainer

    write_dataset("frame_change", tmp_path / "clips", n=8, seed=0, split="train", image_size=56)
    config = MMR1Config.from_dict({"dataset": str(tmp_path / "clips"), "run_dir": str(tmp_path / "run"),
                                   "max_steps": 2, "save_strategy": "no", "capsule_every": 1})
    with pytest.raises(ValueError, match=r"capsule_every=1: capsules do not hold video rows yet"):
        MMR1Trainer(model=str(qwen_path), args=config, train_dataset=load_dataset(tmp_path / "clips"))
    assert not (tmp_path / "run").exists()  # refused before the run folder was claimed
