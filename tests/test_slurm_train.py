"""`python -m mmr1kit.slurm_train`: multi-node training as one Slurm job, tested on a real one-node Slurm
(`tests/slurm_cluster.py`). The node is one machine, so the test asks for two tasks on it: two launchers, each an
`accelerate launch` of one process whose machine rank, machine count and main address come from Slurm's variables,
the multi-node form over loopback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmr1kit.slurm import SlurmError
from mmr1kit.slurm_train import launch_command, launch_flags, main

pytest_plugins = ["slurm_cluster"]

ROOT = Path(__file__).resolve().parent.parent


def submit(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mmr1kit.slurm_train", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slurm
def test_launch_flags_come_from_slurms_variables(slurm_cluster):
    job = {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_ID": "4242",
           "SLURM_GPUS_ON_NODE": "8"}
    assert launch_flags(job) == {"num_machines": "2", "machine_rank": "1", "num_processes": "16",
                                 "main_process_ip": "gpu07", "main_process_port": "24242"}
    assert launch_flags({**job, "MASTER_PORT": "29500"}, processes_per_node=4)["num_processes"] == "8"
    assert launch_flags({**job, "MASTER_PORT": "29500"})["main_process_port"] == "29500"
    command = launch_command(launch_flags(job), ["preset.yaml", "--max_steps", "3"])
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[-5:] == ["-m", "mmr1kit.train", "preset.yaml", "--max_steps", "3"]
    with pytest.raises(SlurmError, match="SLURM_PROCID unset"):
        launch_flags({k: v for k, v in job.items() if k != "SLURM_PROCID"})


@pytest.mark.slurm
@pytest.mark.parametrize("args, said", [
    (["--nodes", "2", "configs/tiny_counting.yaml", "--per_device_train_batch_size", "3", "--num_generations", "4"],
     "error: MMR1Config.num_generations=4: "),
    (["--nodes", "1", "configs/tiny_counting.yaml", "--learning_rate", "fast"],
     "error: MMR1Config: argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
    (["--nodes", "1", "--partition", "nope", "configs/tiny_counting.yaml"],
     "error: sbatch refused the training job: invalid partition specified: nope"),
])
def test_bad_config_or_partition_is_refused_before_anything_is_written(slurm_cluster, tmp_path, capsys, args, said):
    run_dir = tmp_path / "never"
    assert main([*args, "--run_dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(said), err
    assert not run_dir.exists() and slurm_cluster.run("squeue", "-h").stdout.strip() == ""


@pytest.mark.slurm
@pytest.mark.slow
def test_two_launchers_train_one_run_under_slurm(slurm_cluster, qwen_path, counting_dir, tmp_path):
    run_dir = tmp_path / "run"
    preset = tmp_path / "mp.yaml"
    preset.write_text(yaml.safe_dump({
        "model_name_or_path": str(qwen_path), "dataset": str(counting_dir), "max_steps": 2,
        "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8, "save_steps": 2,
        "learning_rate": 1e-2, "seed": 0}))
    # one node here: two tasks on it stand for two nodes (the check before submitting counts one process: the preset
    # fits one or two)
    done = submit("--nodes", "1", "--sbatch-arg=--ntasks-per-node=2", preset, "--run_dir", run_dir)
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2]
    slurm_cluster.wait(job)
    log = (run_dir / "slurm" / f"{job}.out").read_text()
    launches = sorted(line for line in log.splitlines() if line.startswith("task "))
    assert len(launches) == 2, log[-3000:]
    for rank, line in enumerate(launches):  # each launcher's flags, derived from its task's Slurm variables
        assert line.startswith(f"task {rank} on ")
        assert (f"--num_machines 2 --machine_rank {rank} --num_processes 2 --main_process_ip localhost "
                f"--main_process_port {20000 + int(job) % 20000} --rdzv_backend static --same_network "
                f"-m mmr1kit.train {preset} --run_dir {run_dir}") in line
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2], log[-3000:]
    rollouts = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rollouts] == [1] * 8 + [2] * 8  # 4 completions from each of the 2 processes
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
