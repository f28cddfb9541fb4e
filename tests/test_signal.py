"""Dynamic sampling (`mmr1kit.signal`): the selection arithmetic, the merge of tries, a real single-process run that
trains only groups with signal, a real 2-process run (`accelerate launch`), and kill / resume of a run with
`dynamic_sampling="replace"` and `order_dataset="online"`."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from tracker_records import tensorboard_texts

from mmr1kit.advantages import group_advantages
from mmr1kit.capsules import read_capsule
from mmr1kit.config import MMR1Config
from mmr1kit.runs import read_jsonl
from mmr1kit.signal import (
    balanced_size,
    concat_rows,
    final_rows,
    group_signal,
    key_values,
    take_rows,
    take_rows_plan,
)

HERE = Path(__file__).resolve().parent


# --- the arithmetic ----------------------------------------------------------------------------------------------

def test_filter_key_values_and_the_strict_signal_band():
    nan = float("nan")
    rewards = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, nan], [1.0, 1.0],  # group 0: accuracy all 1
                            [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0],  # group 1: accuracy mixed
                            [0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [nan, 1.0]])  # group 2: accuracy all 0 (one unscored)
    names, weights = ["accuracy", "format"], torch.tensor([1.0, 0.5])
    torch.testing.assert_close(key_values(rewards, weights, names, None), rewards[:, 0], equal_nan=True)  # first
    torch.testing.assert_close(key_values(rewards, weights, names, "format"), rewards[:, 1], equal_nan=True)
    overall = key_values(rewards, weights, names, "overall")  # weighted mean over the functions that scored
    assert overall[0] == pytest.approx(1.0) and overall[1] == pytest.approx(1 / 1.5) and overall[2] == 1.0
    assert overall[11] == pytest.approx(1.0)  # only format scored it
    means, signal, high, low = group_signal(key_values(rewards, weights, names, None), 4, 0.01, 0.99)
    torch.testing.assert_close(means, torch.tensor([1.0, 0.5, 0.0]))
    assert signal.tolist() == [False, True, False] and high.tolist() == [True, False, False]
    assert low.tolist() == [False, False, True]
    _, signal, _, _ = group_signal(torch.tensor([0.5] * 4 + [0.25, 0.25, 0.25, 0.25]), 4, 0.25, 0.5)
    assert signal.tolist() == [False, False]  # EasyR1's band is strict on both ends
    with pytest.raises(ValueError, match="filter_key='nope'.*accuracy"):
        key_values(rewards, weights, names, "nope")


def test_take_plan_balance_and_final_rows_over_two_processes():
    # 2 processes x 6 rows, G = 4: group 1 spans both processes (rows 4-7).
    world, n_local = 2, 6
    try1 = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)  # groups 0 and 2 have signal
    taken1, counts = take_rows_plan(try1, world, n_local, [0, 0])
    assert counts == [4, 4] and taken1.equal(try1)
    try2 = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)  # groups 1 and 2
    taken2, counts = take_rows_plan(try2, world, n_local, counts)
    assert counts == [6, 6]  # process 0 takes rows 4-5, process 1 rows 6-7 of the spanning group 1
    assert torch.nonzero(taken2).flatten().tolist() == [4, 5, 6, 7]
    trained = final_rows([taken1, taken2], world, n_local, balanced_size(counts, 2))
    assert [m.sum().item() for m in trained] == [8, 4]
    # Too few rows with signal after the last try: every process returns the same size, topped up with rows of
    # the last try it did not take.
    taken, counts = take_rows_plan(torch.tensor([1] * 4 + [0] * 8, dtype=torch.bool), world, n_local, [0, 0])
    assert counts == [4, 0] and balanced_size(counts, 2) == 2 and balanced_size([5, 6], 2) == 4
    (trained,) = final_rows([taken], world, n_local, 2)
    assert torch.nonzero(trained).flatten().tolist() == [0, 1, 6, 7]  # process 1 tops up with its first rows


def _batch(prompt_lengths, completion_lengths, first_token):
    """A generation batch as TRL 1.16 builds it: prompts left-padded, completions right-padded, images per sample."""
    P, C = max(prompt_lengths), max(completion_lengths)
    rows = len(prompt_lengths)
    prompt_ids = torch.zeros(rows, P, dtype=torch.long)
    prompt_mask = torch.zeros(rows, P, dtype=torch.long)
    completion_ids = torch.zeros(rows, C, dtype=torch.long)
    completion_mask = torch.zeros(rows, C, dtype=torch.long)
    mm = torch.zeros(rows, P + C, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        prompt_ids[i, P - p:] = torch.arange(first_token + 10 * i, first_token + 10 * i + p)
        prompt_mask[i, P - p:] = 1
        mm[i, P - p] = 1  # the image token, first prompt token
        completion_ids[i, :c] = torch.arange(c) + 1
        completion_mask[i, :c] = 1
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.arange(rows, dtype=torch.float) + first_token,
            "ref_per_token_logps": -completion_mask.float(), "mm_token_type_ids": mm,
            "num_items_in_batch": completion_mask.sum(), "num_images": [1] * rows,
            "pixel_values": [torch.full((4, 3), float(first_token + i)) for i in range(rows)],
            "image_grid_thw": [torch.tensor([[1, 2, 2]]) for _ in range(rows)]}


def _unpadded(batch, i):
    pm, cm = batch["prompt_mask"][i].bool(), batch["completion_mask"][i].bool()
    P = batch["prompt_ids"].size(1)
    return (batch["prompt_ids"][i][pm].tolist(), batch["completion_ids"][i][cm].tolist(),
            batch["mm_token_type_ids"][i][:P][pm].tolist(), batch["ref_per_token_logps"][i][cm].tolist(),
            batch["pixel_values"][i].tolist(), float(batch["advantages"][i]))


def test_rows_of_tries_merge_with_trls_padding():
    a, b = _batch([3, 2], [2, 4], 100), _batch([5, 4, 5], [1, 3, 3], 200)
    merged = concat_rows([take_rows(a, [1]), take_rows(b, [0, 2])], pad_token_id=0)
    assert merged["prompt_ids"].shape == (3, 5) and merged["completion_ids"].shape == (3, 4)
    assert merged["mm_token_type_ids"].shape == (3, 9) and len(merged["pixel_values"]) == 3
    expected = [_unpadded(a, 1), _unpadded(b, 0), _unpadded(b, 2)]
    assert [_unpadded(merged, i) for i in range(3)] == expected
    assert merged["num_images"] == [1, 1, 1]
    assert merged["prompt_mask"][0].tolist() == [0, 0, 0, 1, 1]  # left-padded
    assert merged["completion_mask"][1].tolist() == [1, 0, 0, 0]  # right-padded


@pytest.mark.parametrize(
    "values, field",
    [
        ({"filter_low": 0.5, "filter_high": 0.5}, "filter_low"),
        ({"dynamic_sampling": "drop"}, "dynamic_sampling"),
        ({"dynamic_sampling": "filter", "filter_key": "iou"}, "filter_key"),  # not in reward_funcs
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_settings_are_one_line_naming_the_field(values, field):
    with pytest.raises(ValueError) as info:
        MMR1Config.from_dict(values)
    message = str(info.value)
    assert message.startswith(f"MMR1Config.{field}=") and "\n" not in message
    assert MMR1Config(filter_key="r1v_acc", reward_funcs=["r1v_acc", "format"]).filter_key == "r1v_acc"  # aliases


# --- a real run ----------------------------------------------------------------------------------------------------

def parity_reward(completions, id, **kwargs):
    """1 for every completion of an even-id prompt (an all-correct group), else the completion length's parity."""
    return [1.0 if int(i) % 2 == 0 else float(len(c[0]["content"]) % 2) for c, i in zip(completions, id)]


def _trainer_class():
    from mmr1kit.trainer import MMR1Trainer

    class Capture(MMR1Trainer):
        """Keeps the completion ids and advantages that enter the loss."""

        seen: list = []  # noqa: RUF012  (one list per test: the class is made per test)

        def _compute_loss(self, model, inputs):
            ids = inputs["completion_ids"].masked_fill(inputs["completion_mask"] == 0, self._tokenizer.pad_token_id)
            texts = self.processing_class.batch_decode(ids, skip_special_tokens=True)
            self.seen.append((self.state.global_step + 1, texts, inputs["advantages"].tolist()))
            return super()._compute_loss(model, inputs)

    return Capture


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["replace", "filter"])
def test_only_groups_with_signal_train(mode, qwen_path, counting_dir, tmp_path):
    from mmr1kit.data import load_dataset

    run = tmp_path / "run"
    config = MMR1Config.from_dict(dict(
        run_dir=str(run), dataset=str(counting_dir), max_steps=2, learning_rate=1e-2, per_device_train_batch_size=8,
        num_generations=4, max_completion_length=8, save_strategy="no", beta=0.04, dynamic_sampling=mode,
        max_tries=8, seed=1, capsule_every=1, report_to="tensorboard", tracker_rollouts_every=1,
        tracker_rollouts_max_rows=100))
    cls = _trainer_class()
    trainer = cls(model=str(qwen_path), reward_funcs=[parity_reward], args=config,
                  train_dataset=load_dataset(counting_dir, "train", config))
    trainer.train()

    rollouts, _ = read_jsonl(run / "rollouts.jsonl")  # the raw records
    metrics, _ = read_jsonl(run / "metrics.jsonl")
    ledger, _ = read_jsonl(run / "prompts.jsonl")
    tables = tensorboard_texts(run / "tensorboard", "rollouts")  # the trackers' rollout table, as TensorBoard holds it
    assert len(metrics) == 2 and len(ledger) == len(rollouts) // 4
    for step, row in enumerate(metrics, start=1):
        rows = [r for r in rollouts if r["step"] == step]
        groups = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
        means = {g: sum(r["rewards/parity_reward"] for r in rs) / 4 for g, rs in groups.items()}
        trained = [r for r in rows if r["trained"]]
        with_signal = [r for r in trained if 0.01 < means[r["group"]] < 0.99]
        if len(with_signal) < len(trained):  # no group with signal at all: one row (a slice for TRL) tops it up
            assert not with_signal and len(trained) == 1 and trained[0]["advantage"] == 0.0
        assert all(int(r["prompt_id"]) % 2 for r in with_signal)  # even ids are all correct: never trained
        for rs in groups.values():  # advantages from the whole group, as TRL computes them
            expected = group_advantages(torch.tensor([r["rewards/parity_reward"] for r in rs]), 4)
            assert [r["advantage"] for r in rs] == pytest.approx(expected.tolist(), abs=1e-5)
        tries = Counter(r["try"] for r in rows)
        table = tables[step].split("\n")  # one table per step with every try's rows (a later table would replace it)
        assert table[0].endswith("| try | trained |") and len(table) == 2 + len(rows)
        assert [line.split(" | ")[-2:] for line in table[2:]] == [[str(r["try"]), f"{r['trained']} |"] for r in rows]
        assert row["signal/tries"] == len(tries) and all(n == 8 for n in tries.values())
        assert row["signal/prompts_dropped"] == sum(not any(r["trained"] for r in rs) for rs in groups.values())
        assert row["signal/groups_all_correct"] == pytest.approx(sum(m >= 0.99 for m in means.values()) / len(means))
        assert row["signal/groups_all_wrong"] == pytest.approx(sum(m <= 0.01 for m in means.values()) / len(means))
        assert row["signal/frac_tokens_zero_advantage"] == (0.0 if with_signal else 1.0)
        assert 0 <= row["timing/generate_wasted"] <= row["timing/generate"]
        if mode == "filter":
            assert len(tries) == 1 and len(with_signal) == sum(4 for m in means.values() if 0.01 < m < 0.99)
        else:
            assert len(with_signal) == 8 * row["signal/batch_filled"]
        # the ledger: one line per group and try, its pass rate the group's mean, kept when it trained
        lines = [x for x in ledger if x["step"] == step]
        assert [(x["try"], x["pass_rate"], x["kept"]) for x in lines] == [
            (rs[0]["try"], pytest.approx(means[g]), any(r["trained"] for r in rs)) for g, rs in sorted(groups.items())]
        # what entered the loss is exactly the trained rows
        (seen,) = [s for s in cls.seen if s[0] == step]
        assert sorted(seen[1]) == sorted(r["completion"] for r in trained)
        by_text = {r["completion"]: r["advantage"] for r in trained}
        assert [by_text[t] for t in seen[1]] == pytest.approx(seen[2], abs=1e-6)
        # the step's capsule holds exactly the trained rows, each pointing at its own line of rollouts.jsonl
        record, batches = read_capsule(run, step)
        kept = [r for mb in record["rows"] for r in mb]
        assert sorted(r["rollout_index"] for r in kept) == [i for i, r in enumerate(rows) if r["trained"]]
        assert {r["rollout_step"] for r in kept} == {step}
        batch = {k: torch.cat([b[k] for b in batches]) for k in ("capsule_rewards", "advantages")}
        texts = [t for b in batches for t in trainer.processing_class.batch_decode(
            b["completion_ids"].masked_fill(b["completion_mask"] == 0, trainer._tokenizer.pad_token_id),
            skip_special_tokens=True)]
        for j, r in enumerate(kept):
            rollout = rows[r["rollout_index"]]
            assert (r["prompt_id"], r["image"], texts[j]) == (rollout["prompt_id"], rollout["image"],
                                                              rollout["completion"])
            assert batch["capsule_rewards"][j].tolist() == pytest.approx([rollout["rewards/parity_reward"]])
            assert batch["advantages"][j].item() == pytest.approx(rollout["advantage"], abs=1e-6)
    if mode == "replace":
        assert max(m["signal/tries"] for m in metrics) > 1


# --- two processes -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_train_the_same_groups_with_signal(qwen_path, counting_dir, tmp_path):
    """6 completions per process and groups of 4: group 1 of every try spans both processes."""
    from test_multiprocess import checksum_reward, launch

    run = tmp_path / "run"
    preset = tmp_path / "mp.yaml"
    preset.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(qwen_path), dataset=str(counting_dir), run_dir=str(run), max_steps=2,
        per_device_train_batch_size=6, num_generations=4, max_completion_length=8, save_strategy="no",
        learning_rate=1e-2, beta=0.04, seed=0, dynamic_sampling="replace", filter_low=0.3, filter_high=0.6,
        max_tries=10)))
    launch(preset, "signal", timeout=240)  # accelerate launch of tests/helpers_mp.py: 2 processes

    rollouts, _ = read_jsonl(run / "rollouts.jsonl")
    dumps = {k: read_jsonl(run / f"rank{k}.jsonl")[0] for k in (0, 1)}
    tries_seen = []
    for step in (1, 2):
        rows = [r for r in rollouts if r["step"] == step]
        tries = sorted({r["try"] for r in rows})
        tries_seen.append(len(tries))
        for r in rows:
            assert r["rewards/checksum_reward"] == pytest.approx(checksum_reward(r["completion"]))
        groups = {}
        for r in rows:
            groups.setdefault(r["group"], []).append(r)
        for rs in groups.values():  # gathered statistics: the group's advantages, whichever process holds it
            expected = group_advantages(torch.tensor([r["rewards/checksum_reward"] for r in rs]), 4)
            assert [r["advantage"] for r in rs] == pytest.approx(expected.tolist(), abs=1e-5)
            mean = sum(r["rewards/checksum_reward"] for r in rs) / 4
            assert all(0.3 < mean < 0.6 for r in rs if r["trained"])
        per_rank = [next(d for d in dumps[k] if d["step"] == step) for k in (0, 1)]
        assert [len(d["texts"]) for d in per_rank] == [6, 6]  # the same batch size on both processes
        for k in (0, 1):  # process k trains exactly its trained rows of every try (rows 6k .. 6k + 5 of each try)
            mine = [r for t in tries for i, r in enumerate(x for x in rows if x["try"] == t) if 6 * k <= i < 6 * k + 6
                    and r["trained"]]
            assert per_rank[k]["texts"] == [r["completion"] for r in mine]
            assert per_rank[k]["advantages"] == pytest.approx([r["advantage"] for r in mine], abs=1e-5)
    assert max(tries_seen) > 1


# --- kill and resume ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_replace_and_online_order_survive_a_kill_and_resume(qwen_path, counting_dir, tmp_path):
    def train(run_dir, *extra, env=None):  # started, not awaited: the whole run and the killed one run at once
        cmd = [sys.executable, str(HERE / "train_script.py"), str(preset), "--run_dir", str(run_dir), *extra]
        log = open(tmp_path / f"{Path(run_dir).name}-{len(extra)}.log", "w")  # noqa: SIM115  (the child writes it)
        process = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        process.log = Path(log.name)
        return process

    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(qwen_path), dataset=str(counting_dir), max_steps=3, save_steps=2,
        save_total_limit=None, learning_rate=1e-2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=8, beta=0.04, dynamic_sampling="replace", filter_key="overall", filter_low=2.0,
        filter_high=2.6, max_tries=3, order_dataset="online", train_sample_size=12)))
    whole, killed = train(tmp_path / "whole"), train(tmp_path / "resumed", env={"MMR1KIT_TEST_SIGKILL_AT_STEP": "3"})
    assert whole.wait(timeout=300) == 0, whole.log.read_text()[-3000:]
    assert killed.wait(timeout=300) == -9  # killed right after step 3 was recorded, one step after checkpoint-2
    assert {x["step"] for x in read_jsonl(tmp_path / "resumed" / "prompts.jsonl")[0]} == {1, 2, 3}
    resumed = train(tmp_path / "resumed", "--resume_from_checkpoint", "true")
    assert resumed.wait(timeout=300) == 0, resumed.log.read_text()[-3000:]

    def records(run, name, keys):
        return [tuple(json.dumps(x.get(k)) for k in keys) for x in read_jsonl(tmp_path / run / name)[0]]

    keys = ("step", "try", "prompt_id", "pass_rate", "kept")
    whole_ledger = records("whole", "prompts.jsonl", keys)
    assert records("resumed", "prompts.jsonl", keys) == whole_ledger  # step 3's dead lines dropped, then redrawn
    visited = [x[2] for x in whole_ledger]
    assert len(set(visited[:12])) == min(12, len(visited))  # the online order draws unseen prompts first
    keys = ("step", "try", "group", "prompt_id", "completion", "advantage", "trained")
    assert records("resumed", "rollouts.jsonl", keys) == records("whole", "rollouts.jsonl", keys)
    a, b = (read_jsonl(tmp_path / r / "metrics.jsonl")[0] for r in ("whole", "resumed"))
    for key in ("signal/tries", "signal/prompts_dropped", "signal/batch_filled", "loss"):
        assert [m[key] for m in b] == pytest.approx([m[key] for m in a], rel=1e-5, abs=1e-7), key
    assert max(m["signal/tries"] for m in a) > 1
