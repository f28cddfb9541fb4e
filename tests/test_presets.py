"""A GPU user gets MMR1's settings by asking for a preset, and a warning when they forgot to.

`MMR1Config`'s defaults are CPU smoke sizes; `mmr1kit.presets` warns once when a real model is run with them. The
README's GPU commands are read from the README itself and resolved the way the CLI resolves them.
"""

import re
import shlex
import warnings
from pathlib import Path

import pytest
import yaml

from mmr1kit.config import MMR1Config
from mmr1kit.presets import SmokeSizeWarning, gpu_presets, is_tiny

ROOT = Path(__file__).resolve().parent.parent
# MMR1's settings: its published scripts' flags, and TRL 0.15's defaults where the scripts set none
MMR1_SETTINGS = {"learning_rate": 1e-6, "num_generations": 7, "per_device_train_batch_size": 7,
                 "gradient_accumulation_steps": 2, "temperature": 0.9, "top_p": 0.9, "top_k": 50,
                 "max_pixels": 1_000_000, "max_completion_length": 768, "bf16": True, "gradient_checkpointing": True,
                 "kl_approximator": "k3", "beta": 0.04, "use_kl": True, "use_bias_correction_kl": False,
                 "loss_type": "grpo", "scale_rewards": "group", "num_train_epochs": 1, "max_steps": -1, "seed": 42}


def caught(**values):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        MMR1Config(**values)
    return [w for w in seen if issubclass(w.category, SmokeSizeWarning)]


def test_a_real_model_with_smoke_sizes_gets_one_warning_naming_values_and_preset():
    (warning,) = caught(model_name_or_path="Qwen/Qwen2-VL-2B-Instruct")
    message = str(warning.message)
    for value in ("learning_rate=0.0001", "max_completion_length=16", "max_pixels=12544", "max_steps=20",
                  "temperature=1.0 without top_p / top_k", "configs/gpu/mmr1_"):
        assert value in message, value
    preset = re.search(r"configs/gpu/\S+\.yaml", message).group(0)
    assert (ROOT / preset).is_file()
    assert yaml.safe_load((ROOT / preset).read_text())["model_name_or_path"] == "Qwen/Qwen2-VL-2B-Instruct"


def test_only_the_main_process_of_a_launch_warns(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    assert caught(model_name_or_path="Qwen/Qwen2-VL-2B-Instruct") == []


def test_notebook_01s_smoke_sizes_are_named_too():
    (warning,) = caught(model_name_or_path="Qwen/Qwen2-VL-2B-Instruct", max_completion_length=12, max_steps=4)
    assert "max_completion_length=12" in str(warning.message) and "max_steps=4" in str(warning.message)


def test_only_the_values_still_at_smoke_size_are_named():
    (warning,) = caught(model_name_or_path="some-org/some-vlm", learning_rate=1e-6, temperature=0.9, top_p=0.9)
    message = str(warning.message)
    assert "max_completion_length=16" in message and "learning_rate" not in message and "temperature" not in message
    assert "configs/gpu/mmr1_" in message  # no preset for that model: MMR1's own are suggested
    sized = {"learning_rate": 1e-6, "max_completion_length": 512, "max_pixels": 1_000_000, "max_steps": 100}
    assert caught(model_name_or_path="some-org/some-vlm", **sized) == []  # temperature 1.0 alone is a choice


def test_tiny_models_and_presets_do_not_warn(qwen_path):
    assert caught() == [] and caught(model_name_or_path="tiny-llava") == []
    assert is_tiny(qwen_path) and caught(model_name_or_path=str(qwen_path)) == []  # a local tiny checkpoint
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for path in gpu_presets():
            MMR1Config.from_yaml(path, use_vllm=False)
    assert not [w for w in seen if issubclass(w.category, SmokeSizeWarning)]


@pytest.mark.parametrize("name", ["mmr1_counting_qwen2vl2b", "mmr1_rec_qwen2vl2b"])
def test_mmr1_presets_hold_mmr1s_settings(name):
    path = ROOT / "configs" / "gpu" / f"{name}.yaml"
    config = MMR1Config.from_yaml(path, use_vllm=False)
    assert {k: getattr(config, k) for k in MMR1_SETTINGS} == MMR1_SETTINGS
    assert config.model_name_or_path == "Qwen/Qwen2-VL-2B-Instruct" and config.save_steps == 200
    script = {"mmr1_counting_qwen2vl2b": ("train_qwen2_2b_vl_count_demo.sh", ["accuracy", "format"], "r1v"),
              "mmr1_rec_qwen2vl2b": ("train_qwen2_2b_vl_rec_demo.sh", ["perpo_iou"], "default")}[name]
    assert script[0] in path.read_text()
    assert config.reward_funcs == script[1] and config.reward_weights == [1.0] * len(script[1])
    assert {config.system_prompt_template, config.question_template, config.answer_template} == {script[2]}
    assert gpu_presets("Qwen/Qwen2-VL-2B-Instruct")[0].stem.startswith("mmr1_")


def readme_gpu_commands():
    """The shell commands of the README's "On a GPU node" block, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## On a GPU node") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip() and "mmr1kit" in line
            and not line.lstrip().startswith(("#", "conda"))]


def test_readme_gpu_commands_run_mmr1s_preset():
    from mmr1kit.parameters import resolve_parameters

    commands = readme_gpu_commands()
    assert len(commands) == 2
    for argv in commands:
        if "mmr1kit.train" in argv:  # accelerate launch ... -m mmr1kit.train PRESET [--field value ...]
            args = argv[argv.index("mmr1kit.train") + 1 :]
            assert (ROOT / args[0]).is_file() and args[0].startswith("configs/gpu/")
            config = MMR1Config.from_args([str(ROOT / args[0]), *args[1:], "--use_vllm", "false"])
        else:  # mmr1kit run NOTEBOOK -f PRESET -p NAME VALUE ... --run-dir DIR
            assert argv[:2] == ["mmr1kit", "run"]
            preset = argv[argv.index("-f") + 1]
            assert preset.startswith("configs/gpu/")
            params = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "-p"}
            resolved = resolve_parameters(ROOT / argv[2], params, ROOT / preset)
            assert resolved["warmstart_steps"] == 0
            overrides = resolved.pop("config_overrides")
            fields = {k: v for k, v in resolved.items() if k in MMR1Config.field_names()}
            config = MMR1Config.from_dict({**fields, **overrides, "use_vllm": False})
        assert {k: getattr(config, k) for k in MMR1_SETTINGS} == MMR1_SETTINGS
