"""Shared fixtures: one tiny model per architecture and small synthetic datasets, built once per test session.

Everything is real: models are built offline and loaded back through `AutoModelForImageTextToText`, datasets are
PNG + JSON files on disk. The model cache is a session temp folder, so tests never touch the user's cache.
"""

import os

import pytest


os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Point mmr1kit's model / data cache at a session folder (subprocesses inherit it)."""
    import torch

    torch.set_num_threads(1)
    previous = os.environ.get("MMR1KIT_CACHE")
    os.environ["MMR1KIT_CACHE"] = str(tmp_path_factory.mktemp("mmr1kit-cache"))
    yield
    if previous is None:
        os.environ.pop("MMR1KIT_CACHE", None)
    else:
        os.environ["MMR1KIT_CACHE"] = previous


@pytest.fixture(scope="session")
def qwen_path():
    from mmr1kit.models import tiny_vlm

    return tiny_vlm(arch="qwen2_5_vl", hidden_size=64, vision_hidden_size=32)


@pytest.fixture(scope="session")
def llava_path():
    from mmr1kit.models import tiny_vlm

    return tiny_vlm(arch="llava", hidden_size=64, vision_hidden_size=32)


@pytest.fixture(scope="session")
def counting_dir(tmp_path_factory):
    """A small counting dataset in MMR1 JSON format: train.json (64 rows) and test.json (32 rows)."""
    from mmr1kit.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("counting")
    write_dataset("counting", root, n=64, seed=0, split="train")
    write_dataset("counting", root, n=32, seed=1, split="test")
    return root
