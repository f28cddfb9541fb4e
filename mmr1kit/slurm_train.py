"""Multi-node GRPO training on Slurm from one command: one job, one `accelerate launch` per node.

    python -m mmr1kit.slurm_train --nodes 2 --gpus-per-node 8 [--partition P] [--time T] [--sbatch-arg=ARG]...
        [--accelerate-config configs/accelerate/zero3.yaml] PRESET.yaml [--field value ...]

`submit_training` checks the config (`MMR1Config`, for `nodes x gpus-per-node` processes) and asks the cluster
whether it takes the job (`sbatch --test-only`) before anything is written, then writes `<run_dir>/slurm/train.sbatch`
and submits it; the job's output goes to `<run_dir>/slurm/<job id>.out`. The script runs
`srun python -m mmr1kit.slurm_train launch ...`: one launcher per task (one task per node), each of which derives
`accelerate launch`'s flags from Slurm's variables (`launch_flags`) and becomes
`accelerate launch ... -m mmr1kit.train PRESET.yaml [--field value ...]`:

| flag | from |
|---|---|
| `--main_process_ip` | the first host of `scontrol show hostnames $SLURM_JOB_NODELIST` |
| `--num_machines` | `SLURM_NTASKS` (the script asks one task per node: `SLURM_NNODES`) |
| `--machine_rank` | `SLURM_PROCID` (= `SLURM_NODEID` with one task per node) |
| `--num_processes` | machines x per machine: `--gpus-per-node`, else `SLURM_GPUS_ON_NODE`, visible GPUs, or 1 |
| `--main_process_port` | `MASTER_PORT`, else 20000 + job id mod 20000 (two jobs sharing a node do not collide) |

The run folder and the model must be on storage every node sees; only global rank 0 writes the records. For
preemptible partitions add `--resume_from_checkpoint auto` and `--sbatch-arg=--requeue`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path

from mmr1kit.slurm import SlurmError, check_submission, hostnames, sbatch, script_header
from mmr1kit.sweep import visible_gpus

DEFAULT_ACCELERATE = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / "multi_gpu.yaml"


def launch_flags(environ=None, processes_per_node: int | None = None) -> dict[str, str]:
    """`accelerate launch`'s multi-machine flags for this Slurm task, from Slurm's variables (table above).

    Raises:
        `SlurmError`: not inside a Slurm job (`SLURM_JOB_NODELIST`, `SLURM_NTASKS`, `SLURM_PROCID` unset).
    """
    env = os.environ if environ is None else environ
    missing = [v for v in ("SLURM_JOB_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID") if v not in env]
    if missing:
        raise SlurmError(f"not inside a Slurm job step ({', '.join(missing)} unset): `launch` runs under srun in the "
                         f"job script that `python -m mmr1kit.slurm_train` submits")
    machines = int(env["SLURM_NTASKS"])
    per_machine = processes_per_node or int(env.get("SLURM_GPUS_ON_NODE") or 0) or len(visible_gpus()) or 1
    return {
        "num_machines": str(machines),
        "machine_rank": env["SLURM_PROCID"],
        "num_processes": str(machines * per_machine),
        "main_process_ip": hostnames(env["SLURM_JOB_NODELIST"])[0],
        "main_process_port": env.get("MASTER_PORT") or str(20000 + int(env["SLURM_JOB_ID"]) % 20000),
    }


def launch_command(flags: dict[str, str], train_args: list[str], accelerate_config=None) -> list[str]:
    """`accelerate launch --config_file ... <flags> --rdzv_backend static --same_network -m mmr1kit.train ...`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(accelerate_config or DEFAULT_ACCELERATE)]
    for name, value in flags.items():
        command += [f"--{name}", value]
    return command + ["--rdzv_backend", "static", "--same_network", "-m", "mmr1kit.train", *train_args]


# Fields that depend on the nodes' hardware: the nodes check them when the job starts, this machine may have no GPU.
HARDWARE = {"use_cpu": True, "bf16": False, "fp16": False, "deepspeed": None}


def check_config(train_args: list[str], processes: int):
    """Check the run's config before submitting: the preset's and the overrides' names and types, every cross-field
    rule and the batch layout for `processes` processes (`mmr1kit.launch.check_for_processes`), leaving out the fields
    that depend on the nodes' hardware (`HARDWARE`). Returns the config (its `run_dir`).
    """
    import yaml
    from transformers import HfArgumentParser

    from mmr1kit.config import MMR1Config
    from mmr1kit.launch import check_for_processes

    preset, overrides = {}, list(train_args)
    if overrides and overrides[0].endswith((".yaml", ".yml")):
        path = Path(overrides.pop(0))
        if not path.is_file():
            raise ValueError(f"preset {path}: no such file")
        preset = yaml.safe_load(path.read_text()) or {}
    # MMR1Config's own command-line parser types the overrides as `python -m mmr1kit.train` will; parsing into a
    # namespace builds no config, so nothing is checked for one process only
    parser, unset = HfArgumentParser(MMR1Config), object()
    parser.set_defaults(**dict.fromkeys(vars(parser.parse_args([])), unset))  # what the overrides leave unset
    parser.exit_on_error = False  # a bad value raises (one line below) instead of printing the whole usage
    try:
        namespace, unknown = parser.parse_known_args(overrides)
    except argparse.ArgumentError as exc:
        raise ValueError(f"MMR1Config: {exc}") from None
    if unknown:
        raise ValueError(f"MMR1Config: unknown command-line argument(s) {unknown}")
    values = {**preset, **{k: v for k, v in vars(namespace).items() if v is not unset}}
    return check_for_processes({**values, **HARDWARE}, processes)


def submit_training(train_args: list[str], *, nodes: int, gpus_per_node: int = 0, partition=None, time_limit=None,
                    sbatch_args=(), accelerate_config=None, cwd=None) -> tuple[str, Path]:
    """Check and submit a multi-node training job; return (job id, job script).

    Args:
        train_args (`list[str]`): `PRESET.yaml [--field value ...]`, as for `python -m mmr1kit.train`.
        nodes (`int`): nodes of the job, one `accelerate launch` each.
        gpus_per_node (`int`, defaults to 0): GPUs per node (`--gpus-per-node`), one process each; 0: CPU nodes,
            one process per node.
        partition, time_limit, sbatch_args: `--partition`, `--time`, more `#SBATCH` lines.
        accelerate_config (*optional*): an accelerate config (default `configs/accelerate/multi_gpu.yaml`: DDP).
        cwd (*optional*): the job's working directory (default: this one); relative paths in the preset mean the
            same there.

    Raises:
        `ValueError`: a bad config or option. `SlurmError`: no `sbatch`, or the cluster refuses the job.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"--nodes must be at least 1 and --gpus-per-node at least 0, got {nodes} and {gpus_per_node}")
    if not train_args:
        raise ValueError("give the run's preset: PRESET.yaml [--field value ...] (as for python -m mmr1kit.train)")
    if accelerate_config is not None and not Path(accelerate_config).is_file():
        raise ValueError(f"--accelerate-config {accelerate_config}: no such file (see configs/accelerate/)")
    cwd = Path(cwd or os.getcwd()).resolve()
    with warnings.catch_warnings():  # transformers' deprecation notes on config fields: the job's log shows them
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        config = check_config(train_args, nodes * max(gpus_per_node, 1))
    run_dir = (cwd / config.run_dir).resolve()
    resources = [f"--nodes={nodes}", "--ntasks-per-node=1"]
    resources += [f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []
    folder = run_dir / "slurm"
    header = script_header(f"mmr1kit-train-{run_dir.name}", folder / "%j.out", resources=resources,
                           partition=partition, time_limit=time_limit, sbatch_args=sbatch_args)
    check_submission(header, what="the training job")
    launcher = [sys.executable, "-m", "mmr1kit.slurm_train", "launch"]
    launcher += ["--processes-per-node", str(gpus_per_node)] if gpus_per_node else []
    launcher += ["--accelerate-config", str(Path(accelerate_config).resolve())] if accelerate_config else []
    script = [*header[:1], "# Written by `python -m mmr1kit.slurm_train`: one `accelerate launch` per node (srun runs",
              "# one task per node; each derives its machine rank and the main address from Slurm's variables).",
              *header[1:], "set -euo pipefail", f"cd {shlex.quote(str(cwd))}", "export PYTHONUNBUFFERED=1",
              f"srun --kill-on-bad-exit=1 {shlex.join([*launcher, '--', *train_args])}", ""]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.sbatch"
    path.write_text("\n".join(script))
    return sbatch(path, what="the training job"), path


def main(argv=None) -> int:
    """`python -m mmr1kit.slurm_train [options] PRESET.yaml [--field value ...]` submits;
    `python -m mmr1kit.slurm_train launch [--processes-per-node N] [--accelerate-config F] -- ARGS` (in the job) runs
    this node's `accelerate launch`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:
        parser = argparse.ArgumentParser(prog="python -m mmr1kit.slurm_train launch")
        parser.add_argument("--processes-per-node", type=int)
        parser.add_argument("--accelerate-config")
        parser.add_argument("train_args", nargs=argparse.REMAINDER)
        args = parser.parse_args(argv[1:])
        train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        command = launch_command(launch_flags(processes_per_node=args.processes_per_node), train_args,
                                 args.accelerate_config)
        print(f"task {os.environ['SLURM_PROCID']} on {os.uname().nodename}: {shlex.join(command)}", flush=True)
        os.execv(command[0], command)
    parser = argparse.ArgumentParser(prog="python -m mmr1kit.slurm_train",
                                     description="Submit a multi-node GRPO training job to Slurm.")
    parser.add_argument("--nodes", type=int, required=True, help="nodes; one accelerate launch each")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node, one process each (0: CPUs)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--time", help="time limit, e.g. 24:00:00")
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="another sbatch option, e.g. --sbatch-arg=--account=A (repeatable)")
    parser.add_argument("--accelerate-config", help="accelerate config (default configs/accelerate/multi_gpu.yaml)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="PRESET.yaml [--field value ...]")
    args = parser.parse_args(argv)
    try:
        job, script = submit_training(args.train_args, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                      partition=args.partition, time_limit=args.time, sbatch_args=args.sbatch_arg,
                                      accelerate_config=args.accelerate_config)
    except (ValueError, SlurmError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"submitted: job {job} ({args.nodes} node(s)); script {script}; output {script.parent / (job + '.out')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
