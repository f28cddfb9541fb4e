"""Architecture figures from a config alone: the shipped configs have the published sizes, a local folder and
"tiny" work offline, and a config the planner cannot read names the fields it needs."""

import json

import pytest

from mmr1kit.architecture import lora_parameters, read_architecture, shipped_configs

# Parameter counts the model cards publish (safetensors metadata on the Hugging Face Hub), to their rounding.
PUBLISHED = {
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.75e9,
    "Qwen/Qwen2.5-VL-7B-Instruct": 8.29e9,
    "Qwen/Qwen2-VL-2B-Instruct": 2.21e9,
    "llava-hf/llava-1.5-7b-hf": 7.06e9,
}


def test_every_model_of_the_gpu_presets_is_shipped():
    from pathlib import Path

    import yaml

    presets = (Path(__file__).resolve().parent.parent / "configs" / "gpu").rglob("*.yaml")
    models = {yaml.safe_load(p.read_text())["model_name_or_path"] for p in presets}
    assert models <= set(shipped_configs()) and set(PUBLISHED) == set(shipped_configs())


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_shipped_configs_have_the_published_parameter_counts(hub_id):
    arch = read_architecture(hub_id)  # offline: HF_HUB_OFFLINE=1 in the tests
    assert round(arch.params / 1e7) == round(PUBLISHED[hub_id] / 1e7)
    assert 0 < arch.vision_params < arch.params / 2 and arch.largest_layer_params > 0


def test_figures_of_qwen25vl_3b_and_llava():
    qwen = read_architecture("Qwen/Qwen2.5-VL-3B-Instruct")
    assert (qwen.hidden, qwen.layers, qwen.heads, qwen.kv_heads, qwen.head_dim, qwen.intermediate, qwen.vocab) == (
        2048, 36, 16, 2, 128, 11008, 151936)
    assert qwen.tied and qwen.head_params == 0 and qwen.dtype == "bfloat16"
    assert (qwen.vision, qwen.vision_layers, qwen.vision_hidden, qwen.patch, qwen.merge) == ("qwen2_5_vl", 32, 1280,
                                                                                              14, 2)
    assert qwen.image_tokens(1_000_000) == 1275 and qwen.image_patches(1_000_000) == 5100
    assert read_architecture("Qwen/Qwen2-VL-2B-Instruct").vision_intermediate == 5120  # embed_dim 1280 x mlp_ratio 4
    llava = read_architecture("llava-hf/llava-1.5-7b-hf")
    assert llava.vision == "clip" and llava.image_tokens(10**7) == llava.image_tokens(1) == 576
    assert not llava.tied and llava.head_params == 32064 * 4096


def test_tiny_and_a_local_folder_read_offline(qwen_path):
    assert read_architecture("tiny").params < 2e6
    assert read_architecture(str(qwen_path)).hidden == 64
    assert read_architecture(str(qwen_path / "config.json")).source.endswith("config.json")


def test_lora_counts_only_the_adapters():
    trainable = lora_parameters("Qwen/Qwen2-VL-2B-Instruct", 16, 32, None)
    assert 1e6 < trainable < read_architecture("Qwen/Qwen2-VL-2B-Instruct").params / 50
    assert lora_parameters("Qwen/Qwen2-VL-2B-Instruct", 16, 32, ("q_proj", "v_proj")) < trainable


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not an architecture the memory planner knows"),
        ({"hidden_size": 8}, "cannot read its config"),
        (None, "a model folder needs a config.json"),
    ],
)
def test_a_config_it_cannot_read_says_what_it_needs(tmp_path, config, message):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message) as info:
        read_architecture(str(tmp_path))
    if config is not None and "model_type" in config:
        assert "text config (text_config or the top level): {hidden_size, num_hidden_layers" in str(info.value)
