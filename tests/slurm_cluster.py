"""A real one-node Slurm cluster on this machine for the tests (`slurm_cluster` fixture, session-scoped).

`tests/setup_slurm.sh` installs Debian's `slurm-wlm` and `munge`. The fixture writes a `slurm.conf` and a munge key
into a temporary folder, starts `munged`, `slurmctld` and `slurmd` in the foreground as its own child processes (a
container has no systemd), on free localhost ports, with one node `localhost` of 2 CPUs in a partition `debug`, and
exports `SLURM_CONF` so that `sbatch`, `squeue`, ... and the jobs (which inherit the environment) talk to it. At
the end it cancels what is left, waits for it, and stops the daemons it started.

Where the binaries are missing the tests skip with the reason (`CI` set: they fail); where the binaries are there
but the cluster does not come up they fail with the daemons' log tails.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mmr1kit.launch import free_port

SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
CPUS = 2


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"Slurm test cluster: {reason}", pytrace=False)
    pytest.skip(f"Slurm test cluster: {reason}")


def _conf(folder: Path, user: str, ports: tuple[int, int]) -> str:
    return f"""\
ClusterName=mmr1kit-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / "munge.socket"}
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The running test cluster: `env` (with `SLURM_CONF`), `folder`, `logs()`, `wait(job_ids)`."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env = folder, env

    def logs(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=60, check=False)

    def wait(self, *job_ids: str, timeout: float = 900) -> None:
        """Wait until the scheduler has none of `job_ids` (or their array tasks) pending or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = self.run("squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T").stdout.strip()
            if not live:
                return
            time.sleep(1)
        pytest.fail(f"jobs {job_ids} still queued or running after {timeout} s:\n{live}\n{self.logs()}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (tests/setup_slurm.sh installs slurm-wlm and munge with "
                     f"apt-get as root)")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    folder.chmod(0o700)  # munged refuses keys in folders others may write to
    conf = folder / "slurm.conf"
    ports = (free_port(), free_port())
    while ports[0] == ports[1]:
        ports = (ports[0], free_port())
    conf.write_text(_conf(folder, getpass.getuser(), ports))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = []

    def start(*args):
        with open(folder / f"{Path(args[0]).name}.out", "w") as log:  # the child keeps its own descriptor
            daemons.append(subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))

    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)  # the tests' own subprocesses and the jobs they submit
    cluster = Cluster(folder, env)
    try:
        start(_which("munged"), "-F", "-f", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
              f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
              f"--seed-file={folder / 'munged.seed'}")
        _until(lambda: (folder / "munge.socket").exists(), daemons, cluster, "munged did not open its socket")
        start(_which("slurmctld"), "-D", "-i", "-f", str(conf))
        start(_which("slurmd"), "-D", "-N", "localhost", "-f", str(conf))
        _until(lambda: cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", daemons, cluster,
               "the node did not become idle")
        yield cluster
    finally:
        if daemons and (folder / "slurmctld.pid").exists():
            cluster.run("scancel", "--full", "-u", getpass.getuser())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and cluster.run("squeue", "-h").stdout.strip():
                time.sleep(0.5)
        for proc in reversed(daemons):  # only the daemons this fixture started, by their process ids
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def _until(ready, daemons, cluster, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in daemons if p.poll() is not None]
        if dead:
            pytest.fail(f"Slurm test cluster: {Path(dead[0].args[0]).name} exited with code {dead[0].returncode}:\n"
                        f"{cluster.logs()}", pytrace=False)
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(f"Slurm test cluster: {what} within {timeout} s:\n{cluster.logs()}", pytrace=False)
