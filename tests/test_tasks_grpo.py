"""One short GRPO run per task on the tiny model with that task's preset, and the presets themselves.

Each run takes `configs/tiny_<task>.yaml` as it is (templates, rewards, loss) and only shrinks it: 2 steps, 2 prompts
x 4 completions, 16 synthetic rows. It must train without error and log every reward of the preset as
`rewards/<name>/mean`. The GPU presets (`configs/gpu/`) are checked for the MMR1 hyperparameters they quote.
"""

import math
from pathlib import Path

import pytest
import yaml

from mmr1kit.config import MMR1Config
from mmr1kit.data import load_dataset, read_card
from mmr1kit.rewards import REWARDS

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("counting", "grounding", "ocr", "detection", "math")
GPU_PRESETS = sorted((ROOT / "configs" / "gpu").glob("*.yaml"))


def write_task_data(task, folder):
    """16 rows of the task's synthetic set."""
    from mmr1kit.data.synthetic import write_dataset

    return write_dataset(task, folder, n=16)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_grpo_runs_and_logs_every_reward_of_the_tasks_preset(task, qwen_path, tmp_path):
    from mmr1kit.trainer import MMR1Trainer

    write_task_data(task, tmp_path / "data")
    preset = ROOT / "configs" / f"tiny_{task}.yaml"
    config = MMR1Config.from_yaml(preset, dataset=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), max_steps=2,
                                  per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
                                  save_strategy="no")
    dataset = load_dataset(config.dataset, "train", config)
    assert set(dataset["task"]) == {task}
    trainer = MMR1Trainer(model=str(qwen_path), args=config, train_dataset=dataset)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for name in yaml.safe_load(preset.read_text())["reward_funcs"]:
        values = [h[f"rewards/{name}/mean"] for h in logged]
        low, high = {"perpo_iou": (-1.0, 1.0)}.get(name, (0.0, 1.0))
        assert all(math.isfinite(v) and low <= v <= high for v in values), (name, values)


@pytest.mark.parametrize("task", TASKS)
def test_tiny_presets_pair_a_card_with_its_tasks_rewards(task):
    preset = ROOT / "configs" / f"tiny_{task}.yaml"
    values = yaml.safe_load(preset.read_text())
    config = MMR1Config.from_yaml(preset)
    card = read_card(ROOT / config.dataset)
    assert card["mmr1kit"]["task"] == task and config.model_name_or_path == "tiny"
    assert config.bf16 is False and config.use_vllm is False and config.per_device_train_batch_size % 8 == 0
    assert all(name in REWARDS for name in values["reward_funcs"])


@pytest.mark.parametrize("path", GPU_PRESETS, ids=lambda p: p.name)
def test_gpu_presets_quote_mmr1s_hyperparameters(path):
    values = yaml.safe_load(path.read_text())
    assert values["use_vllm"] is True and values["vllm_mode"] == "colocate"  # hence under configs/gpu/
    config = MMR1Config.from_yaml(path, use_vllm=False)  # constructs on a CPU box without vLLM
    assert (config.learning_rate, config.max_pixels, config.max_completion_length) == (1e-6, 1_000_000, 768)
    assert (config.num_generations, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (7, 7, 2)
    assert (config.beta, config.bf16, config.gradient_checkpointing, config.loss_type) == (0.04, True, True, "grpo")
    assert (config.temperature, config.top_p, config.top_k) == (0.9, 0.9, 50)  # MMR1's vLLM SamplingParams
    assert (config.kl_approximator, config.use_bias_correction_kl) == ("k3", False)  # MMR1's k3 gradient
    assert config.max_steps == -1 and config.num_train_epochs == 1 and config.seed == 42
    assert "accelerate launch --config_file configs/accelerate/zero3.yaml" in path.read_text()
    assert f"-m mmr1kit.train configs/gpu/{path.name}" in path.read_text()  # its launch line names itself
    assert (ROOT / "configs" / "accelerate" / "zero3.yaml").is_file()
    dataset = ROOT / config.dataset
    if config.dataset.endswith(".md"):
        assert read_card(dataset)["mmr1kit"]["task"]


def test_gpu_presets_cover_every_task_and_model():
    names = {p.stem for p in GPU_PRESETS}
    assert names == {"counting_qwen25vl3b", "grounding_qwen2vl2b_perpo", "grounding_llava15_7b", "ocr_qwen2vl2b",
                     "detection_qwen25vl7b", "math_qwen25vl3b",
                     "mmr1_counting_qwen2vl2b", "mmr1_rec_qwen2vl2b"}  # MMR1's two published scripts
