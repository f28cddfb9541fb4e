"""The memory planner: every GPU preset fits the GPUs it names, the table's parts react to the knobs they model,
what it says would fit does fit, and `python -m mmr1kit.train` warns before loading a model that will not fit."""

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from mmr1kit.cli import main as cli
from mmr1kit.plan import (
    GIB,
    Layout,
    _estimate,
    largest_fitting,
    load_settings,
    plan,
    preset_layout,
    smallest_changes,
    warn_if_unfit,
)

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "configs" / "gpu").rglob("*.yaml"))
MATH = ROOT / "configs" / "gpu" / "math_qwen25vl3b.yaml"


def test_the_gpu_presets_are_found():
    assert len(PRESETS) >= 8 and MATH in PRESETS


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: str(p.relative_to(ROOT / "configs" / "gpu")))
def test_every_gpu_preset_fits_the_gpus_its_comment_names(preset):
    layout = preset_layout(preset)
    assert layout is not None, (f"{preset}: name the GPUs it is sized for in a comment line such as "
                                f"'# GPUs: 8 x 80 GiB (A100 / H100 80GB), DeepSpeed ZeRO-3'")
    result = plan(preset)
    assert result.layout.gpus == layout.gpus and result.layout.gpu_mem_gib == layout.gpu_mem_gib
    assert result.fits, result.table()
    assert result.total <= layout.gpu_mem_gib * GIB
    assert sum(result.parts.values()) > 0 and result.training_peak == max(result.phases.values())


def test_table_names_every_part_and_the_largest_settings_that_fit(capsys):
    assert cli(["plan", str(MATH)]) == 0
    out = capsys.readouterr().out
    for row in ("policy weights", "gradients", "optimizer state", "reference model", "ZeRO-3 gathered parameters",
                "activations: language model", "activations: vision tower", "LM head: log-prob buffers",
                "rollout buffers", "reference / old log-prob pass", "generation", "vLLM colocated share", "reserve",
                "total per device", "phase peaks:", "largest that fit"):
        assert row in out, row
    assert "1275 image" in out  # max_pixels 1e6 / (14 * 2)^2
    assert "8 x 80 GiB, ZeRO-3" in out and "fits (" in out


def test_knobs_move_the_parts_they_model():
    base, arch = load_settings(MATH)[0], plan(MATH).arch
    layout = Layout(gpus=8, gpu_mem_gib=80, zero=3)

    def est(layout=layout, **change):
        return _estimate({**base, **change}, arch, layout, "")

    ref = est()
    assert est(beta=0.0).parts["reference"] == 0 < ref.parts["reference"]
    assert est(gradient_checkpointing=False).training_peak > 3 * ref.training_peak  # 36 layers' activations
    assert ref.without_checkpointing == est(gradient_checkpointing=False).phases
    assert est(max_pixels=2_000_000).parts["activations_vision"] > ref.parts["activations_vision"]
    assert est(max_completion_length=1536).parts["activations_language"] > ref.parts["activations_language"]
    assert est(layout=replace(layout, gpus=4)).parts["optimizer"] == pytest.approx(2 * ref.parts["optimizer"], 1e-6)
    ddp = est(layout=replace(layout, zero=0), bf16=True)
    assert ddp.parts["weights"] == arch.params * 4  # TRL loads fp32; bf16 is autocast
    assert ddp.parts["optimizer"] == arch.params * 8 and "autocast_copies" in ddp.parts
    lora = est(use_peft=True)
    assert lora.parts["reference"] == 0  # the reference is the policy with its adapters disabled
    assert lora.parts["gradients"] < ref.parts["gradients"] / 10 and lora.workload.reference
    vllm = ref.vllm
    assert vllm["share"] == pytest.approx(0.3 * 80 * GIB, rel=1e-6) and vllm["fits"] and vllm["sequences"] > 14
    assert est(use_vllm=False).vllm == {} and est(use_vllm=False).parts["generation"] > ref.parts["generation"]


def test_what_it_says_fits_does_and_one_more_does_not():
    settings, arch = load_settings(MATH)[0], plan(MATH).arch
    layout = Layout(gpus=8, gpu_mem_gib=80, zero=3)
    largest = largest_fitting(settings, arch, layout)
    batch, pixels = largest["per_device_train_batch_size"], largest["max_pixels"]
    assert batch and pixels
    assert _estimate({**settings, "per_device_train_batch_size": batch}, arch, layout, "").fits
    assert not _estimate({**settings, "per_device_train_batch_size": batch + 7}, arch, layout, "").fits
    assert _estimate({**settings, "max_pixels": pixels}, arch, layout, "").fits
    assert not _estimate({**settings, "max_pixels": pixels + 28 * 28}, arch, layout, "").fits


def test_an_unfit_run_exits_1_and_every_change_it_suggests_fits(capsys):
    small = next(m for m in range(80, 8, -2) if not plan(MATH, gpu_mem=m).fits)  # 8 GPUs, ZeRO-3 (its comment)
    assert cli(["plan", str(MATH), "--gpu-mem", str(small)]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "to fit: " in out
    result = plan(MATH, gpu_mem=small)
    changes = smallest_changes(result)
    assert len(changes) >= 2 and all(c.text in out for c in changes)
    for change in changes:
        assert _estimate({**result.settings, **change.settings}, result.arch, change.layout or result.layout, "").fits


def test_a_config_it_cannot_read_names_the_fields_it_needs(tmp_path, capsys):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2}')
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"model_name_or_path: {folder}\n")
    assert cli(["plan", str(preset)]) == 2
    err = capsys.readouterr().err
    assert "model_type 'gpt2' is not an architecture the memory planner knows" in err
    assert "hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size" in err
    assert "vision_config.{depth, hidden_size, num_heads, intermediate_size, patch_size" in err
    preset.write_text("model_name_or_path: nobody/nothing\n")
    assert cli(["plan", str(preset)]) == 2
    assert "cannot read its config" in capsys.readouterr().err


def test_train_warns_before_loading_a_model_that_will_not_fit(monkeypatch, caplog):
    from mmr1kit.train import main as train

    monkeypatch.setenv("MMR1KIT_GPU_MEM_GIB", "80")  # one 80 GiB GPU, no ZeRO: the fp32 3B policy, AdamW, reference
    with caplog.at_level(logging.WARNING, logger="mmr1kit.plan"), pytest.raises(Exception) as failure:
        train([str(MATH), "--use_vllm", "false", "--dataset", "no/such/dataset.json"])
    warning = next(r.getMessage() for r in caplog.records if r.name == "mmr1kit.plan")
    assert "will probably not fit" in warning and "for 80.0 GiB (1 x 80 GiB, one process)" in warning
    assert "Smallest changes that fit: use_peft=True (LoRA)" in warning
    assert "no/such/dataset.json" in str(failure.value)  # it went on, and failed on the data before any model loaded


def test_no_gpu_means_no_plan(monkeypatch):
    from mmr1kit.config import MMR1Config

    monkeypatch.delenv("MMR1KIT_GPU_MEM_GIB", raising=False)
    assert warn_if_unfit(MMR1Config()) is None
    monkeypatch.setenv("MMR1KIT_GPU_MEM_GIB", "2")
    assert warn_if_unfit(MMR1Config()).fits  # the tiny model: the 1 GiB CUDA context is most of it


def test_the_docs_example_is_what_plan_prints_today(monkeypatch):
    from mmr1kit import memory_model

    text = (ROOT / "docs" / "memory.md").read_text()
    block = re.search(r"<!-- plan:begin (\S+) -->\n```text\n(.*?)\n```\n<!-- plan:end -->", text, re.DOTALL)
    monkeypatch.chdir(ROOT)
    result = plan(block.group(1))
    assert block.group(2) == result.table()
    assert "under DDP (`--zero 0`) needs about 144 GiB" in text
    assert round(plan(block.group(1), zero=0).total / GIB) == 144
    assert "(off, they would need about 141 GiB)" in text
    assert round(sum(memory_model.activations(result.arch, result.workload, checkpointing=False).values()) / GIB) == 141


@pytest.mark.parametrize("preset, gib", [("vllm/colocate.yaml", 129), ("vllm/server.yaml", 120)])
def test_the_ddp_figures_quoted_in_the_vllm_presets_are_the_plans(preset, gib):
    path = ROOT / "configs" / "gpu" / preset
    assert f"about {gib} GiB per GPU" in path.read_text().replace("\n# ", " ") or f"needs about {gib} GiB" in \
        path.read_text()
    assert round(plan(path, zero=0).total / GIB) == gib
    if preset == "vllm/colocate.yaml":
        assert f"needs about {gib} GiB per GPU under DDP" in (ROOT / "docs" / "scale_out.md").read_text()
