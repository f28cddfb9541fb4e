"""The objective lab (`mmr1kit.replay`) on a real tiny run with capsules: the run's own objective reproduces the logged
step and the run's next checkpoint; every other number is recomputed here from the raw files and a plain forward pass
(never through `_compute_loss`)."""

import json
import shutil

import numpy as np
import pytest
import torch
from raw_records import raw_rows
from safetensors.torch import load_model

from mmr1kit.capsules import capsule_dir, read_capsule
from mmr1kit.cli import main
from mmr1kit.models import load_policy
from mmr1kit.replay import OBJECTIVE_FIELDS, replay, replayed_weights

pytest_plugins = ["runs_fixture"]  # capsule_run (capsules of steps 2 and 3, checkpoint-2), capsule_replay (step 3)


def logged(run_dir) -> dict[int, dict]:
    return {row["step"]: row for row in raw_rows(run_dir, "metrics.jsonl")}


@pytest.fixture(scope="module")
def step2(capsule_run):
    """Step 2 replayed under the run's own objective only."""
    return replay(capsule_run, 2)


@pytest.mark.slow
def test_the_runs_own_objective_reproduces_the_logged_loss_and_grad_norm(capsule_run, capsule_replay, step2):
    metrics = logged(capsule_run)
    table = capsule_replay.variants
    own = table[table["is_run"]]
    assert own["label"].tolist() == ["kl_approximator=k3, loss_type=grpo"]  # the run's config is a grid point
    assert len(table) == 4
    for result, step in ((capsule_replay, 3), (step2, 2)):
        row = result.variants[result.variants["is_run"]].iloc[0]
        assert row["loss"] == pytest.approx(metrics[step]["loss"], rel=1e-6, abs=1e-12)
        assert row["grad_norm"] == pytest.approx(metrics[step]["grad_norm"], rel=1e-6)
        assert row["learning_rate"] == pytest.approx(metrics[step]["learning_rate"], rel=1e-12)
    others = table[~table["is_run"]]
    assert (abs(others["loss"] - own["loss"].iloc[0]) > 1e-6).all()  # the other objectives are other losses


@pytest.mark.slow
def test_the_replayed_step_of_the_runs_objective_gives_the_next_checkpoint(capsule_run):
    weights = replayed_weights(capsule_run, 2)
    checkpoint = load_policy(capsule_run / "checkpoints" / "checkpoint-2", dtype=torch.float32).state_dict()
    assert weights.keys() == checkpoint.keys()
    assert all(torch.equal(weights[k], checkpoint[k]) for k in checkpoint)


@pytest.mark.slow
def test_per_token_weights_follow_the_loss_formula(capsule_run, capsule_replay):
    """k1's KL adds beta to each token's d loss / d logp; on-policy (ratio 1, inside the clip range) the policy term
    is -A. grpo divides by the completion's length and the batch size, dapo by the batch's token count."""
    _, (batch,) = read_capsule(capsule_run, 3)
    A, m = batch["advantages"][:, None].double(), batch["completion_mask"].double()
    beta, B = 0.04, m.size(0)
    grpo = (-A + beta) * m / (m.sum(1, keepdim=True) * B)
    dapo = (-A + beta) * m / m.sum()
    np.testing.assert_allclose(capsule_replay.token_weights["kl_approximator=k1, loss_type=grpo"], grpo.numpy(),
                               rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(capsule_replay.token_weights["kl_approximator=k1, loss_type=dapo"], dapo.numpy(),
                               rtol=1e-5, atol=1e-10)
    assert (m.sum(1) < m.size(1)).any()  # completions of different lengths: grpo and dapo weigh them differently
    frame = capsule_replay.completions
    frame = frame[frame["label"] == "kl_approximator=k1, loss_type=dapo"]
    assert frame["length"].tolist() == m.sum(1).tolist()
    assert frame["weight_sum"].tolist() == pytest.approx(dapo.sum(1).tolist(), rel=1e-5)


def plain_forward(model, batch, temperature):
    """`(B, T, V)` log-softmax at the completion positions, from the model's own forward (no trainer)."""
    T = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(input_ids=torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
                       attention_mask=torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1),
                       pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                       mm_token_type_ids=batch["mm_token_type_ids"]).logits
    return (logits[:, -T - 1 : -1].double() / temperature).log_softmax(-1)


@pytest.mark.slow
def test_the_one_step_effect_matches_a_plain_forward(capsule_run, step2):
    """Before: the capsule's weights; after the run's own step: checkpoint-2 (the test above shows they are equal)."""
    record, (batch,) = read_capsule(capsule_run, 2)
    before = load_policy(record["model"], dtype=torch.float32).eval()
    load_model(before, str(capsule_dir(capsule_run, 2) / "model.safetensors"))
    after = load_policy(capsule_run / "checkpoints" / "checkpoint-2", dtype=torch.float32).eval()
    reference = load_policy(record["model"], dtype=torch.float32).eval()
    t, m = record["temperature"], batch["completion_mask"].double()
    ids = batch["completion_ids"].unsqueeze(-1)
    lp = {name: plain_forward(model, batch, t) for name, model in
          (("before", before), ("after", after), ("ref", reference))}
    dlogp = (((lp["after"] - lp["before"]).gather(-1, ids).squeeze(-1)) * m).sum(1) / m.sum(1)
    entropy = {k: -(v.exp() * v).sum(-1) for k, v in lp.items()}
    exact = (lp["after"].exp() * (lp["after"] - lp["ref"])).sum(-1)
    row = step2.variants.iloc[0]
    A = batch["advantages"]
    assert (A > 0).any() and (A < 0).any()
    assert row["dlogp_rewarded"] == pytest.approx(float(dlogp[A > 0].mean()), rel=1e-4, abs=1e-7)
    assert row["dlogp_unrewarded"] == pytest.approx(float(dlogp[A < 0].mean()), rel=1e-4, abs=1e-7)
    assert row["dentropy"] == pytest.approx(float(((entropy["after"] - entropy["before"]) * m).sum() / m.sum()),
                                            rel=1e-4, abs=1e-7)
    assert row["exact_kl_after"] == pytest.approx(float((exact * m).sum() / m.sum()), rel=1e-4)
    assert row["dlogp_rewarded"] > row["dlogp_unrewarded"]  # the policy gradient favours the rewarded completions


@pytest.mark.slow
def test_estimators_at_the_capsule_weights_are_those_the_run_logged(capsule_run, capsule_replay):
    """The run logged kl/k1, kl/k2, kl/k3, kl/exact of step 3 on this batch with these weights."""
    metrics = logged(capsule_run)[3]
    table = capsule_replay.estimator_table().set_index("estimator")
    for name in ("k1", "k2", "k3", "exact"):
        assert table.loc[name, "mean"] == pytest.approx(metrics[f"kl/{name}"], rel=1e-5, abs=1e-8), name
    assert metrics["kl/exact"] > 0.01  # the policy has moved from the reference: the estimators disagree
    assert table.loc["k1", "spread"] > table.loc["k3", "spread"] > 0
    for row in capsule_replay.variants.itertuples():
        assert row.exact_kl_before == pytest.approx(metrics["kl/exact"], rel=1e-5)


@pytest.mark.slow
def test_gradient_cosine_matrix(capsule_replay):
    cosine = capsule_replay.cosine.to_numpy()
    assert list(capsule_replay.cosine.index) == list(capsule_replay.variants["label"])
    np.testing.assert_allclose(np.diag(cosine), 1.0, rtol=1e-5)
    np.testing.assert_allclose(cosine, cosine.T, rtol=1e-6)
    assert (cosine < 1 - 1e-4).any() and (np.abs(cosine) <= 1 + 1e-6).all()


@pytest.mark.slow
def test_bad_input_fails_before_any_weights_load(capsule_run, tmp_path, capsys):
    run = tmp_path / "run"  # without the capsules' weights: any load would fail with another error
    shutil.copytree(capsule_run, run, ignore=shutil.ignore_patterns("model.safetensors", "optimizer.safetensors",
                                                                    "checkpoints"))
    with pytest.raises(ValueError, match=r"no capsule of step 1; steps with a capsule: 2, 3$"):
        replay(run, 1)
    with pytest.raises(ValueError, match=r"kl_approximator=k9: MMR1Config.kl_approximator='k9': expected one of"):
        replay(run, 3, {"kl_approximator": ["k1", "k9"]})
    with pytest.raises(ValueError, match=r"--grid temperature: not an objective field"):
        replay(run, 3, {"temperature": [0.5]})
    with pytest.raises(ValueError, match=r"lerning_rate.*did you mean learning_rate"):
        replay(run, 3, {"lerning_rate": [1e-3]})
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"max_steps": 3}))
    with pytest.raises(ValueError, match="kept no capsules; train it with capsule_every > 0"):
        replay(tmp_path / "plain")
    capsys.readouterr()
    assert main(["replay", str(run), "--step", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {run}: no capsule of step 1; steps with a capsule: 2, 3"
    assert main(["replay", str(run), "--grid", "beta=-1,0.1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("error: replay --grid beta=-1: MMR1Config.beta=-1: "
                                                                "must be >= 0")
    assert "loss_type" in OBJECTIVE_FIELDS and "num_generations" not in OBJECTIVE_FIELDS


@pytest.mark.slow
def test_the_command_prints_the_table_and_writes_replay_json(capsule_run, tmp_path, capsys):
    assert main(["replay", str(capsule_run), "--grid", "kl_approximator=k1,k3", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == str(tmp_path / "out")
    assert out[0] == f"step 3 of {capsule_run} (8 completions)"  # the latest capsule by default
    record = json.loads((tmp_path / "out" / "replay.json").read_text())
    own = next(v for v in record["variants"] if v["is_run"])
    assert own["label"] == "kl_approximator=k3" and own["loss"] == pytest.approx(logged(capsule_run)[3]["loss"],
                                                                                 rel=1e-6)
    assert any(line.startswith("v2 kl_approximator=k3 (run)") for line in out)
    assert len(record["token_weights"]["kl_approximator=k1"]) == 8


@pytest.mark.slow
def test_a_run_without_reference_and_two_micro_batches_replays_with_a_kl(qwen_path, grounding_dir, tmp_path):
    """beta=0 (TRL's default): no reference ran, the capsule has no reference log-probs; a beta > 0 variant gets
    them from the reference's own forward. Two micro-batches per optimizer step: the loss is their sum."""
    from runs_fixture import train_run  # after pytest_plugins registered the module (assertion rewriting)

    run = train_run(qwen_path, grounding_dir, tmp_path / "run", steps=3, beta=0.0, per_device_train_batch_size=4,
                    gradient_accumulation_steps=2)
    record, batches = read_capsule(run, 3)
    assert record["micro_batches"] == len(batches) == 2 and record["reference_model"] is None
    assert not any("ref_per_token_logps" in b for b in batches)
    result = replay(run, 3, {"beta": ["0.0", "0.04"]})
    no_kl, kl = result.variants.itertuples()
    assert no_kl.is_run and no_kl.loss == pytest.approx(logged(run)[3]["loss"], rel=1e-6)
    assert no_kl.grad_norm == pytest.approx(logged(run)[3]["grad_norm"], rel=1e-6)
    before = load_policy(record["model"], dtype=torch.float32).eval()
    load_model(before, str(capsule_dir(run, 3) / "model.safetensors"))
    reference = load_policy(record["model"], dtype=torch.float32).eval()
    k3, m = [], []
    for batch in batches:
        lp, ref = (plain_forward(model, batch, record["temperature"]) for model in (before, reference))
        d = (ref - lp).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
        k3.append(torch.expm1(d) - d)
        m.append(batch["completion_mask"].double())
    k3, m = torch.cat(k3), torch.cat(m)
    assert result.estimator_table().set_index("estimator").loc["k3", "mean"] == pytest.approx(
        float((k3 * m).sum() / m.sum()), rel=1e-4)
    per_sequence = ((k3 * m).sum(1) / m.sum(1)).mean()  # grpo: beta x the per-sequence mean of k3, batch mean
    assert kl.loss - no_kl.loss == pytest.approx(0.04 * float(per_sequence), rel=1e-4)
