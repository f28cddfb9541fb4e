"""Real tiny run folders for the tests of the inspection / curves / comparison tools (widgets, compare, notebooks).

Each run is a real `MMR1Trainer` run of the tiny Qwen2.5-VL on synthetic grounding data (3 optimizer steps, seconds
on one CPU thread). `tiny_sweep` lays six points out exactly as `mmr1kit.notebook.sweep` does (one folder per grid
point, `sweep.json` written from the same `SweepPoint` records), without paying for a kernel per point.

`smoke_project` is a fresh copy of the project's notebooks in which notebook 01 ran through `mmr1kit run` with its
defaults, as a new user would start (its console kept): the notebook tests, the report tests and the browser test all
read that one run. `capsule_run` adds a checkpoint at step 2 and `capsule_replay` replays its step 3
(`mmr1kit.replay`).

Import the fixtures into a test module (`pytest_plugins = ["runs_fixture"]`); they build on `qwen_path` from
`tests/conftest.py`.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from helpers_cli import CliRun, mmr1kit_run

ROOT = Path(__file__).resolve().parent.parent


def length_reward(completions, id, **kwargs):
    """Graded by length (the random tiny model scores 0 on IoU everywhere, which would make every group flat),
    except on prompts with an even id, where it is a flat 0.5: zero-variance groups, as all-right or all-wrong
    groups are in real runs."""
    return [0.5 if int(i) % 2 == 0 else min(len(c[0]["content"]), 40) / 40.0 for c, i in zip(completions, id)]


def train_run(model_path, data_dir, run_dir, *, steps: int = 2, **overrides) -> Path:
    """Train the tiny model for `steps` GRPO steps into `run_dir` (no checkpoints; capsules every 2 steps and at the
    last, for `mmr1kit.replay`); return the run folder."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.rewards import REWARDS
    from mmr1kit.trainer import MMR1Trainer

    values = {"run_dir": str(run_dir), "dataset": str(data_dir), "max_steps": steps, "learning_rate": 1e-2,
              "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 8,
              "save_strategy": "no", "beta": 0.04, "reward_funcs": ["iou", "answer_format"], "logging_steps": 1,
              "capsule_every": 2}
    config = MMR1Config.from_dict({**values, **overrides})
    dataset = load_dataset(data_dir, "train", config)
    funcs = [REWARDS["iou"], REWARDS["answer_format"], length_reward]
    trainer = MMR1Trainer(model=str(model_path), reward_funcs=funcs, args=config, train_dataset=dataset)
    trainer.train()
    return Path(run_dir)


def write_sweep(sweep_dir, points: list[tuple[dict, Path, str]], grid: dict) -> Path:
    """`sweep.json` as `mmr1kit.notebook.sweep` writes it; `points` are `(grid values, run folder, status)`."""
    from mmr1kit.runs import write_json
    from mmr1kit.sweep import SweepPoint, _point_name

    records = [asdict(SweepPoint(name=_point_name(values), parameters=values, run_dir=str(run_dir), status=status,
                                 error=None if status == "succeeded" else "RuntimeError: boom", wall_time_s=1.0))
               for values, run_dir, status in points]
    record = {"notebook": "notebooks/01_train_grpo.ipynb", "grid": grid, "parameters": {}, "jobs": 1,
              "points": records}
    return write_json(Path(sweep_dir) / "sweep.json", record)


@pytest.fixture(scope="session")
def grounding_dir(tmp_path_factory):
    """Synthetic grounding data in MMR1 JSON format (boxes in the solutions), 16 training rows."""
    from mmr1kit.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("grounding")
    write_dataset("grounding", root, n=16, seed=0, split="train")
    return root


@pytest.fixture(scope="session")
def tiny_run(qwen_path, grounding_dir, tmp_path_factory) -> Path:
    """One real run folder: 3 steps x 2 groups x 4 completions, rewards iou / answer_format / length_reward."""
    return train_run(qwen_path, grounding_dir, tmp_path_factory.mktemp("runs") / "tiny", steps=3)


@pytest.fixture(scope="session")
def capsule_run(qwen_path, grounding_dir, tmp_path_factory) -> Path:
    """`tiny_run`'s set-up with a checkpoint at step 2: capsules of steps 2 and 3, `checkpoints/checkpoint-2`.

    Sampling adds 5 to the end-of-turn logit (transformers' `sequence_bias`), so the captured batches hold completions
    of different lengths by construction (1 to 8 tokens), not by the random model's chance: the replay tests need
    them to tell apart the loss types' length normalisations. The loss itself scores the policy without the bias."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(qwen_path).convert_tokens_to_ids("<|im_end|>")
    return train_run(qwen_path, grounding_dir, tmp_path_factory.mktemp("runs") / "capsules", steps=3,
                     save_strategy="steps", save_steps=2, generation_kwargs={"sequence_bias": [[[eos], 5.0]]})


@pytest.fixture(scope="session")
def capsule_replay(capsule_run):
    """`mmr1kit.replay.replay` of step 3 of `capsule_run` under kl_approximator k1 / k3 x loss_type grpo / dapo."""
    from mmr1kit.replay import replay

    return replay(capsule_run, 3, {"kl_approximator": ["k1", "k3"], "loss_type": ["grpo", "dapo"]})


@pytest.fixture(scope="session")
def tiny_sweep(qwen_path, grounding_dir, tmp_path_factory) -> Path:
    """A sweep folder over `kl_approximator` in {k1, k3, k2} x `seed` in {0, 1}: four real 3-step runs (k1, k3) and
    two points recorded as failed with empty run folders (k2), as crashed points are."""
    grid = {"kl_approximator": ["k1", "k3", "k2"], "seed": [0, 1]}
    sweep_dir = tmp_path_factory.mktemp("sweep")
    points = []
    for kind, seed in itertools.product(*grid.values()):
        values = {"kl_approximator": kind, "seed": seed}
        run_dir = sweep_dir / f"kl_approximator={kind},seed={seed}"
        if kind == "k2":
            run_dir.mkdir()
            points.append((values, run_dir, "failed"))
        else:
            train_run(qwen_path, grounding_dir, run_dir, steps=3, kl_approximator=kind, seed=seed)
            points.append((values, run_dir, "succeeded"))
    write_sweep(sweep_dir, points, grid)
    return sweep_dir


@dataclass
class SmokeProject:
    """A copy of the project (notebooks, the default data card) where notebook 01 ran with its defaults."""

    root: Path
    run_dir: Path  # runs/smoke, notebook 01's own default
    train: CliRun  # the console of that run


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> SmokeProject:
    """`mmr1kit run notebooks/01_train_grpo.ipynb` in a fresh copy of the project, no run folder given (and
    `report_to tensorboard`, the notebook parameter of the trackers)."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())  # marks the project root
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "data_cards").mkdir()
    shutil.copy(ROOT / "data_cards" / "synthetic_counting.md", root / "data_cards")
    train = mmr1kit_run(root, "notebooks/01_train_grpo.ipynb", "-p", "report_to", "tensorboard")
    assert train.returncode == 0, train.stderr[-3000:]
    return SmokeProject(root, root / "runs" / "smoke", train)
