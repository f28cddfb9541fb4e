"""Two real training processes on this machine: `accelerate launch` (torchrun, gloo) of the `mmr1kit.train` entry point.

One launch trains 2 steps with 2 completions per process and groups of 4, so every group spans both processes; a
second launch, in the multi-node form (two launchers of one process each over loopback), resumes it from its
checkpoint for 2 more steps. `tests/helpers_mp.py` is the entry point with a
deterministic reward and a per-process dump of what each process trains on.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from raw_records import raw_rows, raw_steps, rollouts_per_step

from mmr1kit import kl
from mmr1kit.launch import free_port
from mmr1kit.runs import load_run, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "helpers_mp.py"
CPU_CONFIG = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
G = 4


def checksum_reward(text):  # the same function as tests/helpers_mp.py, on one text
    return (sum(map(ord, text)) % 17) / 16


def launch(preset, launch_id, *overrides, machines=1, timeout=180):
    """`accelerate launch` of 2 processes: one launcher, or `machines=2` launchers of 1 process each (the multi-node
    form of docs/scale_out.md, over loopback)."""
    port = str(free_port())
    env = {**os.environ, "MP_TEST_LAUNCH": launch_id, "OMP_NUM_THREADS": "1"}
    launchers = []
    for rank in range(machines):
        nodes = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                 "--rdzv_backend", "static", "--same_network"] if machines == 2 else []
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
                   "--num_processes", "2", *nodes, "--main_process_port", port, str(HELPER), str(preset), *overrides]
        launchers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env=env, cwd=ROOT))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in launchers]
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
    for p, out in zip(launchers, outputs):
        assert p.returncode == 0, out[-6000:]


@pytest.mark.slow
def test_two_processes_gather_groups_record_once_and_resume(qwen_path, counting_dir, tmp_path):
    run_dir = tmp_path / "run"
    preset = tmp_path / "mp.yaml"
    preset.write_text(yaml.safe_dump(dict(
        model_name_or_path=str(qwen_path), dataset=str(counting_dir), run_dir=str(run_dir), max_steps=2,
        per_device_train_batch_size=2, num_generations=G, max_completion_length=8, save_steps=2,
        learning_rate=1e-2, beta=0.04, seed=0)))
    launch(preset, "first")

    # (a) rewards are gathered before group normalization: each process's loss uses the advantages of the whole group
    dumps = {k: read_jsonl(run_dir / f"rank{k}.jsonl")[0] for k in (0, 1)}
    assert [d["world"] for k in (0, 1) for d in dumps[k]] == [2] * 4
    rollouts = load_run(run_dir).rollouts
    local_only_differs = False
    for step in (1, 2):
        rows = rollouts[rollouts["step"] == step]  # gathered order: process 0's completions, then process 1's
        per_rank = [next(d for d in dumps[k] if d["step"] == step) for k in (0, 1)]
        assert per_rank[0]["prompt_ids"] == per_rank[1]["prompt_ids"] == [rows["prompt_id"].iloc[0]] * 2  # split group
        texts = per_rank[0]["texts"] + per_rank[1]["texts"]
        assert rows["completion"].tolist() == texts
        rewards = torch.tensor([checksum_reward(t) for t in texts])
        assert rows["rewards/checksum_reward"].tolist() == pytest.approx(rewards.tolist())
        expected = kl.group_advantages(rewards, G)  # one process holding the whole group
        used = per_rank[0]["advantages"] + per_rank[1]["advantages"]  # what each process's loss received
        assert used == pytest.approx(expected.tolist(), abs=1e-5)
        assert rows["advantage"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
        local = torch.cat([kl.group_advantages(rewards[:2], 2), kl.group_advantages(rewards[2:], 2)])
        local_only_differs |= not torch.allclose(local, expected, atol=1e-3)
    assert local_only_differs  # the check can tell gathered from per-process normalization

    # (b) every process's rollouts exactly once, from the main process only (the raw lines, not a reader's view)
    assert rollouts_per_step(run_dir) == {1: G, 2: G} and raw_steps(run_dir) == [1, 2]
    assert (rollouts.groupby(["step", "group"])["prompt_id"].nunique() == 1).all()
    assert not rollouts.duplicated(["step", "completion"]).any()
    assert (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert (run_dir / "final" / "model.safetensors").exists()

    # (c) resume from the checkpoint, with the same 2 processes started by the multi-node form (2 launchers,
    # --num_machines 2 --machine_rank k --main_process_ip ...). A dead run's tail (a step-3 row written after the last
    # checkpoint) is dropped.
    with open(run_dir / "rollouts.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "prompt_id": "from-a-dead-run", "group": 0}) + "\n")
    launch(preset, "resumed", "--max_steps", "4", "--allow_changes", "max_steps", "--resume_from_checkpoint", "true",
           machines=2)  # a longer run: a change to the record, so it is named
    resumed = [d for k in (0, 1) for d in read_jsonl(run_dir / f"rank{k}.jsonl")[0] if d["launch"] == "resumed"]
    assert sorted({d["step"] for d in resumed}) == [3, 4]  # steps 1-2 came from the checkpoint, not retrained
    run = load_run(run_dir)
    assert rollouts_per_step(run_dir) == {1: G, 2: G, 3: G, 4: G}
    assert "from-a-dead-run" not in {r.get("prompt_id") for r in raw_rows(run_dir, "rollouts.jsonl")}
    assert raw_steps(run_dir) == [1, 2, 3, 4] and run.repeated_steps == {}
    state = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert run.manifest["resumed_from"].endswith("checkpoint-2")
    assert run.manifest["resumes"][0]["changed"] == {"max_steps": [2, 4]} and run.config["max_steps"] == 4
