"""Launch `python -m mmr1kit.train` under `accelerate launch` from a notebook, and stream its progress.

One process trains inside the notebook kernel; several processes cannot (design decision 8), so the training notebook
hands the run to `accelerate launch` and reads the run folder back like any other:

    run_dir = launch_training(config_dict, num_processes=2)   # prints the launched run's output as it comes
    run = load_run(run_dir)

No home-made launcher: this only writes the config, builds the `accelerate launch` command line and relays its
output. `configs/accelerate/` holds launch configs for GPUs (DDP, DeepSpeed, FSDP) and CPUs.
"""

import codecs
import copy
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"


class LaunchError(RuntimeError):
    """The launched training exited with an error; the message ends with the tail of its output."""

    def __init__(self, command, returncode, tail):
        self.command, self.returncode, self.tail = command, returncode, tail
        super().__init__(f"`{' '.join(command)}` exited with code {returncode}; last output:\n{tail}")


def free_port() -> int:
    """A free TCP port on the loopback interface (for the rendezvous of a local launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_for_processes(config_dict: dict, num_processes: int):
    """Build `config_dict` (`MMR1Config` fields) as each of `num_processes` processes will, in this process: every
    field, and the batch layout for that many processes (group divisibility, vLLM tensor parallelism). Returns the
    config it built, whose batch fields are those of all the processes together. Raises `ValueError` naming the
    field."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.scale import check_layout

    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in config_dict.items()}
    # Every field, checked in this process as if it generated the completions of all N processes: the same global
    # batch, so the same group divisibility. (Building the config with WORLD_SIZE=N here would set up a process
    # group; `accelerate launch` sets WORLD_SIZE before each launched process builds it.)
    per_device = values.get("per_device_train_batch_size", MMR1Config.per_device_train_batch_size)
    config = MMR1Config.from_dict({**values, "per_device_train_batch_size": per_device * num_processes})
    layout = copy.copy(config)  # and the layout rules that depend on the process count (vLLM tensor parallelism)
    layout.per_device_train_batch_size = per_device
    layout.generation_batch_size = values.get("generation_batch_size")
    layout.steps_per_generation = values.get("steps_per_generation")
    previous = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(num_processes)
    try:
        check_layout(layout)
    finally:
        if previous is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = previous
    return config


def write_launch_config(config_dict: dict, num_processes: int = 1) -> Path:
    """Validate `config_dict` as `MMR1Config` fields for `num_processes` processes (`check_for_processes`) and write
    it as YAML.

    The file is `<run_dir>/launch.yaml`: the preset the launched processes read. Validation runs here, in the caller's
    process, so a bad field or an impossible layout fails before anything is launched.
    """
    config = check_for_processes(config_dict, num_processes)
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in config_dict.items()}
    run_dir = Path(config.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    values["run_dir"] = str(run_dir)
    path = run_dir / "launch.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=True))
    return path


def launch_command(config_yaml, num_processes: int, accelerate_config=None, main_process_port: int | None = None,
                   extra_args=()) -> list[str]:
    """The `accelerate launch ... -m mmr1kit.train <config_yaml>` command line (this interpreter's accelerate).

    Without `accelerate_config`, the flags give one machine, `num_processes` processes, DDP (NCCL on GPUs, gloo on
    CPUs) and no launcher-side mixed precision (the config's `bf16` decides).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--num_processes", str(num_processes), "--main_process_port", str(main_process_port or free_port())]
    return command + ["-m", "mmr1kit.train", str(config_yaml), *map(str, extra_args)]


def stream_process(command, out=None, timeout: float | None = None, env=None, tail_chars: int = 6000) -> str:
    """Run `command`, relay its stdout and stderr to `out` as they come (carriage returns kept, so tqdm bars redraw
    in place in a notebook) and return the tail of the output. Raise `LaunchError` on a non-zero exit.

    The process runs in its own session; on a timeout or an interrupt (the notebook's stop button) the whole
    process group is terminated, then killed after 10 s.
    """
    out = out or sys.stdout
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = deque(maxlen=tail_chars)
    deadline = None if timeout is None else time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not selector.select(timeout=wait):
                raise TimeoutError(f"the launched training ran past its timeout of {timeout} s: stopped")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            text = decoder.decode(chunk)
            tail.extend(text)
            out.write(text)
            out.flush()
        returncode = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    text = "".join(tail)
    if returncode != 0:
        raise LaunchError(command, returncode, text[-3000:])
    return text


def _stop(proc) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def launch_training(config_dict: dict, num_processes: int, accelerate_config=None, out=None,
                    timeout: float | None = None) -> Path:
    """Train `config_dict` (MMR1Config fields) with `num_processes` processes through `accelerate launch`.

    Writes the config to `<run_dir>/launch.yaml`, runs `accelerate launch --num_processes N [--config_file ...]
    -m mmr1kit.train <run_dir>/launch.yaml`, relays its output (progress bars included) to `out` (default stdout:
    the notebook), and returns the run folder, which holds the same records as a run in the kernel.

    Args:
        config_dict (`dict`): `MMR1Config` fields; validated here for `num_processes` processes before launching.
        num_processes (`int`): Processes on this machine (GPUs, or CPU processes with gloo).
        accelerate_config (`str` or `Path`, *optional*): An accelerate config (e.g. `configs/accelerate/zero2.yaml`);
            `--num_processes` overrides its count.
        timeout (`float`, *optional*): Seconds before the launch is stopped.

    Raises:
        `LaunchError`: the launched run failed; the message ends with the tail of its output.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    config_yaml = write_launch_config(config_dict, num_processes)
    command = launch_command(config_yaml, num_processes, accelerate_config)
    stream_process(command, out=out, timeout=timeout)
    return config_yaml.parent
