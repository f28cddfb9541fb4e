"""The two tested dependency sets (constraints.txt: CPU, constraints-gpu.txt: GPU with vLLM) agree with pyproject.toml
and environment.yml, and pip's resolver still finds a solution for the GPU node's install (tests marked `network`
ask PyPI, metadata only)."""

import re
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repo, not installed
from benchmarks import wheelhouse

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = ("vllm", "deepspeed", "lora", "trackers")
WHAT_TO_DO = ("What to do: find a set that installs (vLLM's own pins of torch and transformers decide it), put it in "
              "constraints-gpu.txt and environment.yml, and widen pyproject.toml's ranges to contain it; "
              "tests/setup_vllm_cpu.sh then tests it on the CPU (`make test-vllm`).")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lines) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in lines]
    return {_name(line): line.split("==")[1].strip() for line in lines if "==" in line}


def _constraints(file: str) -> dict[str, str]:
    return _pins((ROOT / file).read_text().splitlines())


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def _requirements(extras=()) -> list[Requirement]:
    listed = PROJECT["dependencies"] + [r for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    return [Requirement(r) for r in listed]


def test_environment_yml_names_every_dependency_of_pyproject():
    env_names = {_name(r) for r in _environment_pip() if not r.startswith("-")}
    core = {_name(r) for r in PROJECT["dependencies"]}
    gpu_extras = {_name(r) for extra in EXTRAS for r in PROJECT["optional-dependencies"][extra]}
    assert core - env_names == set(), "in pyproject.toml but not in environment.yml"
    assert env_names - core - gpu_extras == set(), "in environment.yml but not in pyproject.toml"
    assert gpu_extras <= env_names


def test_environment_yml_installs_the_gpu_set():
    assert _pins(_environment_pip()) == _constraints("constraints-gpu.txt")


@pytest.mark.parametrize("file, extras", [("constraints.txt", ("lora", "trackers")), ("constraints-gpu.txt", EXTRAS)])
def test_each_tested_set_lies_inside_pyproject_ranges(file, extras):
    pins = _constraints(file)
    checked = 0
    for requirement in _requirements(extras):
        if requirement.name in pins:
            pin = pins[requirement.name]
            assert requirement.specifier.contains(pin), f"{file}: {requirement.name}=={pin} is outside {requirement}"
            checked += 1
    assert checked >= 6  # torch, torchvision, transformers, trl, accelerate, datasets (+ the extras)


def test_the_two_sets_span_the_transformers_range():
    cpu, gpu = _constraints("constraints.txt"), _constraints("constraints-gpu.txt")
    (spec,) = [r.specifier for r in _requirements() if r.name == "transformers"]
    lower = min(Version(s.version) for s in spec if s.operator == ">=")
    upper = min(Version(s.version) for s in spec if s.operator == "<")
    assert Version(gpu["transformers"]).release[:2] == lower.release[:2]  # the range starts at the GPU set ...
    assert Version(cpu["transformers"]).release[:2] == (upper.release[0], upper.release[1] - 1)  # ... ends at CPU's
    assert cpu["trl"] == gpu["trl"]  # one TRL: its private methods are overridden


def test_gpu_vllm_is_inside_trls_supported_range():
    """TRL's own `vllm` extra states the vLLM versions it supports; the GPU set's vLLM must be one of them."""
    (trl_vllm,) = [Requirement(r) for r in requires("trl") if r.startswith("vllm") and 'extra == "vllm"' in r]
    assert trl_vllm.specifier.contains(_constraints("constraints-gpu.txt")["vllm"]), trl_vllm


# --- pip's resolver, asked for real (dry run: metadata only, nothing installed) --------------------------------------


RESOLUTIONS = {
    "environment.yml's pip section": lambda tmp: ["-r", str(_pip_section_file(tmp))],
    f"`pip install -c constraints-gpu.txt '.[{','.join(EXTRAS)}]'`": lambda tmp: [
        "-c", "constraints-gpu.txt", f".[{','.join(EXTRAS)}]"],
}


def _pip_section_file(tmp: Path) -> Path:
    requirements = tmp / "environment-pip.txt"
    requirements.write_text("\n".join(_environment_pip()) + "\n")  # `-e .`: pip runs in the repository root
    return requirements


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """Both questions asked at once (each takes about a minute, most of it waiting for the index): {what: versions}
    or {what: PipError}."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(what):
        tmp = tmp_path_factory.mktemp("resolve")
        try:
            return wheelhouse.resolved_versions(wheelhouse.resolve(RESOLUTIONS[what](tmp), tmp / "report.json", what,
                                                                   WHAT_TO_DO))
        except wheelhouse.PipError as error:
            return error

    with ThreadPoolExecutor(len(RESOLUTIONS)) as pool:
        return dict(zip(RESOLUTIONS, pool.map(ask, RESOLUTIONS)))


def _versions_or_fail(resolved, what):
    if isinstance(resolved[what], wheelhouse.PipError):
        pytest.fail(str(resolved[what]), pytrace=False)
    return resolved[what]


@pytest.mark.network
def test_environment_yml_pip_section_resolves(resolved):
    versions = _versions_or_fail(resolved, "environment.yml's pip section")
    pins = _pins(_environment_pip())  # exactly the pins, torch included: PyPI's CUDA build, not a local +cpu one
    assert {k: versions.get(k) for k in pins} == pins


@pytest.mark.network
def test_vllm_extra_resolves_with_the_gpu_constraints(resolved):
    versions = _versions_or_fail(resolved, f"`pip install -c constraints-gpu.txt '.[{','.join(EXTRAS)}]'`")
    pins = _constraints("constraints-gpu.txt")
    assert {k: versions.get(k) for k in pins} == pins


@pytest.mark.network
def test_an_unresolvable_set_fails_with_pips_conflict_message(tmp_path):
    """The check above can fail: the set this project had before (vLLM with transformers 5.23) is refused, in pip's
    words, with what to do."""
    with pytest.raises(wheelhouse.PipError) as error:
        wheelhouse.resolve(["vllm==0.31.0", "transformers==5.23.0"], tmp_path / "report.json", "the old set",
                           WHAT_TO_DO)
    message = str(error.value)
    assert "the old set does not install" in message and "ResolutionImpossible" in message
    assert "vllm 0.31.0 depends on transformers<5.18.0" in message and WHAT_TO_DO in message


def test_an_unreachable_index_is_reported_as_such(monkeypatch):
    """No network is not a pass: the resolver tests fail and say that the index could not be reached."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nothing listens
    with pytest.raises(wheelhouse.PipError, match=r"package index http://127\.0\.0\.1:9/simple cannot be reached"):
        wheelhouse.resolve(["trl==1.16.0"], Path("unused.json"), "trl")
