"""The repository stands on its own: no committed file points outside it, and the documents' links resolve."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Assembled from parts, so that this file does not match itself.
OUTSIDE = re.compile("|".join(re.escape(p) for p in (
    "../" + "shared", "/work/" + "shared", "shared/" + "research", "shared/" + "seed",
    "research/" + "learning-feasibility", "research/" + "peers",
)))
# The MMR1 specification and research notes the project was written from are private: cite MMR1's own source files or `docs/mmr1.md`.
PRIVATE = re.compile("|".join(re.escape(p) for p in (
    "mmr1-" + "spec", "spec" + " §", "learning-" + "feasibility", "trl-1.16-" + "on-cpu", "vllm-" + "cpu.md",
    "style-" + "anchors",
)))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target), anchors dropped


def committed_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed files are unknown")
    files = [ROOT / n for n in names.decode().split("\0") if n]
    texts = []
    for path in files:
        data = path.read_bytes() if path.is_file() else b"\0"
        if b"\0" not in data[:8192]:  # binary files (images, parquet) hold no references
            texts.append(path)
    return texts


def test_no_committed_file_references_a_path_outside_the_repository():
    found = []
    for path in committed_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_no_committed_file_cites_the_private_specification():
    this = Path(__file__).resolve()
    found = []
    for path in committed_text_files():
        if path.resolve() == this:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if PRIVATE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, ("citations of the private specification (cite MMR1's source or docs/mmr1.md):\n"
                       + "\n".join(found))


def test_relative_links_of_the_documents_resolve_inside_the_repository():
    docs = [ROOT / "README.md", ROOT / "notebooks" / "README.md", ROOT / "benchmarks" / "README.md",
            *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "data_cards").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: public addresses
                continue
            resolved = (doc.parent / target).resolve()
            if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "links that do not resolve inside the repository:\n" + "\n".join(broken)
