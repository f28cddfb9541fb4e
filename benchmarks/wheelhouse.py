"""Installing mmr1kit where plain `pip install` cannot: pip's resolver asked in dry-run mode, the wheel folder of an
offline GPU node (`make wheelhouse`) and the install from it (`make gpu-check`). When pip says no, the user gets pip's
own explanation and what to do, never a traceback from here.

    python -m benchmarks.wheelhouse make wheelhouse          # a connected machine with the node's Python and platform
    python -m benchmarks.wheelhouse venv .venv-gpu           # the node: an environment that sees the node's packages
    python -m benchmarks.wheelhouse install wheelhouse --python .venv-gpu/bin/python   # the node: no package index

The folder holds mmr1kit's wheel and every wheel that `mmr1kit[lora]` needs with the GPU set (constraints-gpu.txt),
except the CUDA stack (torch, triton, nvidia-*, cuda-*): the node brings its own CUDA torch, built for its driver, and
gigabytes of CUDA wheels would be wasted. transformers is in the folder, and pip takes it only where the node's own is
outside mmr1kit's range. vLLM and DeepSpeed are not: the GPU check uses vLLM when the node has it.

Standard library only: on the offline node this runs before any of mmr1kit's dependencies is installed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_CONSTRAINTS = ROOT / "constraints-gpu.txt"
CUDA_STACK = re.compile(r"^(torch|triton|nvidia-.+|cuda-.+)$")
INFO = "wheelhouse.json"
# pip's own find-links / extra-index folders that do not exist for a package clutter every failure message.
NOISE = "is ignored: it is neither a file nor a directory"
# This machine's pip configuration adds a local folder that holds a CPU-only torch 2.13.0+cpu, which pip prefers to
# PyPI's CUDA build of the same version (a local version label sorts first). A GPU node resolves against the index,
# so the folder is left out: PIP_FIND_LINKS=" " is an empty list (an empty string would mean "unset").
INDEX_ONLY = {"PIP_FIND_LINKS": " "}


class PipError(RuntimeError):
    """pip said no: the message is pip's own explanation followed by what to do."""


def pip(args: list[str], python: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m pip ARGS` in the repository root; stdout and stderr together in `.stdout`."""
    return subprocess.run([python or sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)


def pip_says(output: str) -> str:
    """pip's explanation of a failure: its output from the first `ERROR:` line on (the last lines if none)."""
    lines = [line for line in output.splitlines() if NOISE not in line]
    first = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), max(0, len(lines) - 20))
    return "\n".join(lines[first:]).strip()


def missing_packages(output: str) -> list[str]:
    """The requirements pip found no distribution for (`No matching distribution found for X`)."""
    return re.findall(r"No matching distribution found for (\S+)", output)


def index_url() -> str:
    """The package index pip uses here: `PIP_INDEX_URL`, else pip's configuration, else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    listed = pip(["config", "list"]).stdout
    found = re.search(r"^(?:\S+\.)?index-url='([^']+)'", listed, flags=re.MULTILINE)  # not extra-index-url
    return found.group(1) if found else "https://pypi.org/simple"


def check_index(url: str | None = None, timeout: float = 15.0) -> None:
    """Raise `PipError` saying so when the package index cannot be reached: no answer from pip would mean anything."""
    url = url or index_url()
    probe = url.rstrip("/") + "/pip/"
    cert = os.environ.get("PIP_CERT")
    try:
        import ssl

        context = ssl.create_default_context(cafile=cert) if cert and Path(cert).exists() else None
        with urllib.request.urlopen(probe, timeout=timeout, context=context) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as error:
        raise PipError(f"the package index {url} cannot be reached from this machine ({error}): pip's resolver "
                       f"cannot be asked, so whether the install works is unknown. Run this where the index is "
                       f"reachable.") from None


def resolve(requirements: list[str], report: Path, what: str, advice: str = "") -> dict:
    """Ask pip's resolver whether `requirements` (arguments of `pip install`) install together into an empty
    environment of this platform. Only metadata is fetched, nothing is installed.

    Returns pip's installation report (`pip install --report`: `install` lists every package with its version).
    Raises `PipError` with pip's conflict message (and `advice`) when there is no solution, or when the index is
    unreachable.
    """
    check_index()
    report = Path(report)
    # fast-deps: pip reads a wheel's METADATA through HTTP range requests where the index does not serve it apart
    # (this machine's registry does not): without it a dry run downloads about 3 GB of CUDA wheels. pip falls back to
    # a whole download where ranges are refused; the resolution is the same either way.
    out = pip(["install", "--dry-run", "--ignore-installed", "--use-feature=fast-deps", "--retries", "2",
               "--report", str(report), *requirements], env=INDEX_ONLY)
    if out.returncode != 0:
        raise PipError(f"{what} does not install: pip's resolver (dry run) says\n\n{pip_says(out.stdout)}\n\n{advice}"
                       .rstrip())
    return json.loads(report.read_text())


def resolved_versions(report: dict) -> dict[str, str]:
    """`{name: version}` of everything in a pip installation report (names normalised as pip does)."""
    return {_normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target() -> dict:
    """What a wheel folder is made for: the Python version and the platform (wheels of compiled packages differ)."""
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "platform": sysconfig.get_platform()}


def make(folder: Path, constraints: Path = GPU_CONSTRAINTS, extras: str = "lora") -> dict:
    """Fill `folder` with the wheels of `mmr1kit[extras]`'s dependencies, resolved with `constraints`, minus the CUDA
    stack; sdists (pure Python) are built into wheels. Writes `wheelhouse.json` (target, versions, what was left out).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = resolve(["-c", str(constraints), f".[{extras}]"], folder / "resolution.json",
                     f"mmr1kit[{extras}] with {constraints.name}",
                     f"Fix the pins in {constraints.name} first (tests/test_environment.py asks the same question).")
    versions = resolved_versions(report)
    versions.pop("mmr1kit", None)
    left_out = sorted(name for name in versions if CUDA_STACK.match(name))
    wanted = [f"{name}=={version}" for name, version in sorted(versions.items()) if name not in left_out]
    out = pip(["wheel", "--no-deps", "--wheel-dir", str(folder), str(ROOT), *wanted], env=INDEX_ONLY)
    if out.returncode != 0:
        raise PipError(f"pip could not fetch or build every wheel into {folder}:\n\n{pip_says(out.stdout)}")
    info = {**target(), "constraints": constraints.name, "extras": extras,
            "packages": {n: versions[n] for n in sorted(versions) if n not in left_out}, "left_out": left_out,
            "made_s": round(time.time() - started, 1), "made": time.strftime("%Y-%m-%d %H:%M:%S")}
    (folder / INFO).write_text(json.dumps(info, indent=1) + "\n")
    return info


def node_venv(folder: Path) -> str:
    """Create a virtual environment for the check that sees this interpreter's packages (the node's CUDA torch,
    transformers, vLLM) behind its own, and return its python. What pip installs into it from the wheel folder wins;
    the node's own environment is left as it was.

    The node's site-packages folders go into a `.pth` file: `venv --system-site-packages` would show the *base*
    interpreter's packages instead when this interpreter is itself a virtual environment.
    """
    import venv

    folder = Path(folder)
    venv.create(folder, with_pip=True)
    python = str(folder / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    sites = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (Path(purelib) / "node_site_packages.pth").write_text("".join(f"{p}\n" for p in sites))
    return python


def install(folder: Path, python: str, extras: str = "lora") -> str:
    """Install mmr1kit and its missing dependencies into `python`'s environment from `folder` only (`--no-index`).

    What the environment already has and mmr1kit accepts (the node's CUDA torch, its transformers when inside
    mmr1kit's range) stays. mmr1kit itself is the wheel made with the folder, reinstalled every time (its version
    number does not change between commits); run from the checkout, `python -m benchmarks.gpu_check` imports the
    checkout's code anyway. Returns pip's output; raises `PipError` naming what is missing.
    """
    folder = Path(folder)
    info_path = folder / INFO
    if not info_path.exists():
        raise PipError(f"{folder}: not a wheel folder made by `make wheelhouse` (no {INFO} in it). Make it on a "
                       f"connected machine with the node's Python version and copy it here.")
    info = json.loads(info_path.read_text())
    ask = "import json, sys, sysconfig; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'platform': " \
          "sysconfig.get_platform()}))"
    here = json.loads(subprocess.run([python, "-c", ask], capture_output=True, text=True, check=True).stdout)
    if (info["python"], info["platform"]) != (here["python"], here["platform"]):
        raise PipError(f"{folder} was made for Python {info['python']} on {info['platform']}; {python} is Python "
                       f"{here['python']} on {here['platform']}: make the folder with that Python "
                       f"(`make wheelhouse PYTHON=python{here['python']}`).")
    out = pip(["install", "--no-index", "--find-links", str(folder), f"mmr1kit[{extras}]"], python=python)
    if out.returncode == 0:
        again = pip(["install", "--no-index", "--find-links", str(folder), "--force-reinstall", "--no-deps",
                     "mmr1kit"], python=python)
        if again.returncode == 0:
            return out.stdout + again.stdout
        out = again
    names = missing_packages(out.stdout)
    if not names:  # a conflict, or anything else pip refuses: pip's words are the explanation
        raise PipError(f"pip cannot install mmr1kit from {folder} into {python}'s environment:\n\n"
                       f"{pip_says(out.stdout)}")
    cuda = [n for n in names if CUDA_STACK.match(_normalise(re.split(r"[<>=!~;\[ ]", n)[0]))]
    what_to_do = (f"{', '.join(cuda)} is left out of the wheel folder on purpose (the CUDA stack): install the "
                  f"node's own CUDA build first, in a version mmr1kit accepts." if cuda else
                  "Make the folder again on a connected machine (`make wheelhouse`): it holds every dependency but "
                  "the CUDA stack.")
    raise PipError(f"missing on this node: {', '.join(names)}: not in the wheel folder {folder} (made for "
                   f"{info['constraints']}, {len(info['packages'])} packages) and not installed in {python}'s "
                   f"environment. {what_to_do}\n\npip said:\n{pip_says(out.stdout)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("make", help="fill a wheel folder (needs the package index)")
    made.add_argument("folder", type=Path)
    made.add_argument("--constraints", type=Path, default=GPU_CONSTRAINTS)
    env = sub.add_parser("venv", help="a virtual environment that sees this interpreter's packages behind its own")
    env.add_argument("folder", type=Path)
    put = sub.add_parser("install", help="install mmr1kit from a wheel folder, without a package index")
    put.add_argument("folder", type=Path)
    put.add_argument("--python", default=sys.executable, help="the interpreter whose environment gets mmr1kit")
    args = parser.parse_args(argv)
    try:
        if args.command == "venv":
            print(f"{node_venv(args.folder)}: sees {sys.executable}'s packages")
        elif args.command == "make":
            info = make(args.folder, args.constraints)
            print(f"{args.folder}: {len(info['packages'])} packages for Python {info['python']} on "
                  f"{info['platform']} in {info['made_s']} s (left out: {', '.join(info['left_out'])})")
        else:
            install(args.folder, args.python)
            print(f"mmr1kit installed from {args.folder} into {args.python}'s environment")
    except PipError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
