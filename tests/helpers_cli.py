"""`mmr1kit run` as a user runs it: a subprocess with its own console (for the notebook and browser tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CliRun:
    """One `mmr1kit run` in a subprocess: its exit code and console."""

    returncode: int
    stdout: str
    stderr: str


def mmr1kit_run(project: Path, *args: str, timeout: int = 600) -> CliRun:
    """`mmr1kit run ARGS` in a subprocess started in `project`, with this checkout's mmr1kit first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "mmr1kit.cli", "run", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return CliRun(proc.returncode, proc.stdout, proc.stderr)
