"""The conda environment for GPU nodes names the same dependencies as pyproject.toml and the tested pins."""

import re
import tomllib
from pathlib import Path

import yaml


ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lines):
    return {_name(r): r.split("==")[1].strip() for r in lines if "==" in r}


def test_environment_yml_names_every_dependency_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_names = {_name(r) for r in pip if not r.startswith("-")}
    core = {_name(r) for r in project["dependencies"]}
    gpu_extras = {_name(r) for extra in ("vllm", "deepspeed", "lora", "trackers")
                  for r in project["optional-dependencies"][extra]}
    assert core - env_names == set(), "in pyproject.toml but not in environment.yml"
    assert env_names - core - gpu_extras == set(), "in environment.yml but not in pyproject.toml"
    assert gpu_extras <= env_names


def test_pins_agree_with_constraints_and_ranges():
    constraints = _pins(l for l in (ROOT / "constraints.txt").read_text().splitlines() if not l.startswith("#"))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {k: v for k, v in _pins(pip).items() if k in constraints} == constraints
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        if requirement.name in constraints:  # the tested pin lies inside the honest range
            assert requirement.specifier.contains(constraints[requirement.name]), requirement
