"""benchmarks/wheelhouse.py on the offline node's side: what a user sees when the wheel folder cannot serve the
install.

(Making a folder needs the package index and a few hundred MB: measured by hand, see README "On a GPU node". pip's
resolver, asked for real, is tested in tests/test_environment.py.)
"""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repo, not installed
from benchmarks import wheelhouse


def _folder(tmp_path, **info):
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    (folder / wheelhouse.INFO).write_text(json.dumps({**wheelhouse.target(), "constraints": "constraints-gpu.txt",
                                                      "packages": {}, **info}))
    return folder


def _install(folder, python, **env):
    return subprocess.run([sys.executable, "-m", "benchmarks.wheelhouse", "install", str(folder), "--python", python],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env},
                          check=False)


@pytest.fixture(scope="module")
def bare_node(tmp_path_factory):
    """A folder with mmr1kit's wheel only, and an environment with nothing but pip."""
    tmp = tmp_path_factory.mktemp("node")
    folder = _folder(tmp)
    built = wheelhouse.pip(["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(ROOT)])
    assert built.returncode == 0, built.stdout
    python = str(tmp / "node" / "bin" / "python")
    # pip from the base interpreter's site-packages when it has one (instant), else its own copy (ensurepip)
    venv.create(tmp / "node", system_site_packages=True)
    if subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=False).returncode != 0:
        venv.create(tmp / "node", clear=True, with_pip=True)
    return folder, python


def test_a_missing_package_is_named_with_the_wheel_folder(bare_node):
    """The first dependency pip cannot find is named, with the folder and what to do, and no traceback. (No pip
    configuration, as on a bare node: this machine's adds an index and constraints.)"""
    folder, python = bare_node
    done = _install(folder, python, PIP_CONFIG_FILE=os.devnull)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: missing on this node: ") and f"not in the wheel folder {folder}" in first
    missing = first.removeprefix("error: missing on this node: ").split(":")[0]
    assert missing.split("[")[0].split(">")[0].split("=")[0] in {
        wheelhouse._normalise(r.split(">")[0].split("=")[0].split("<")[0]) for r in _dependencies()}
    # the CUDA stack is left out of the folder on purpose, and then the user is told so
    assert ("install the node's own CUDA build first" in first) == bool(wheelhouse.CUDA_STACK.match(missing))
    assert "pip said:" in done.stderr and "No matching distribution found for" in done.stderr


def _dependencies():
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_a_folder_made_for_another_python_is_refused_before_pip_runs(tmp_path):
    folder = _folder(tmp_path, python="3.9")
    done = _install(folder, sys.executable)
    here = wheelhouse.target()
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: {folder} was made for Python 3.9 on {here['platform']}; {sys.executable} is Python {here['python']} "
        f"on {here['platform']}: make the folder with that Python (`make wheelhouse PYTHON=python{here['python']}`).")


def test_a_folder_not_made_by_make_wheelhouse_is_refused(tmp_path):
    done = _install(tmp_path, sys.executable)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {tmp_path}: not a wheel folder made by")


def test_an_unresolvable_install_prints_pips_conflict(bare_node, tmp_path):
    """A site-wide constraint that no wheel in the folder can meet: pip's own conflict message, no traceback."""
    folder, python = bare_node
    constraint = tmp_path / "site-constraints.txt"
    constraint.write_text("torchvision<=0.29.1\n")
    done = _install(folder, python, PIP_CONFIG_FILE=os.devnull, PIP_CONSTRAINT=str(constraint))
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith(f"error: pip cannot install mmr1kit from {folder} into {python}'s environment:")
    assert "The conflict is caused by:" in done.stderr and "ResolutionImpossible" in done.stderr
