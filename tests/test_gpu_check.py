"""benchmarks/gpu_check.py, the first look at a GPU node: the same script at tiny size on the CPU, as a user runs it,
its one JSON read raw; the 3B architecture it builds; the per-phase memory accounting."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repo, not installed
from benchmarks import gpu_check


@pytest.mark.slow
def test_tiny_check_writes_one_json_with_every_figure(tmp_path):
    from importlib.metadata import version

    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--size", "tiny", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["check"] == "gpu_check" and report["size"] == "tiny" and report["machine"]["device"] == "cpu"
    assert report["budget_s"] == 480 and report["within_budget"] == (report["wall_s"] <= 480)
    for package in ("torch", "transformers", "trl"):
        assert report["versions"][package] == version(package)
    assert report["model"]["layers"] == 2 and report["model"]["vocab_size"] < 2048  # the tiny Qwen2.5-VL

    assert set(report["engines"]) == {"hf", "vllm"}
    assert report["engines"]["vllm"]["status"] == "skipped" and report["engines"]["vllm"]["reason"]
    hf = report["engines"]["hf"]
    assert hf["status"] == "ok" and hf["steps"] == 2 and hf["measured_steps"] == 1  # step 1 is the warm-up
    assert set(hf["phase_s"]) == set(gpu_check.PHASES) and all(v >= 0 for v in hf["phase_s"].values())
    assert hf["phase_s"]["generate"] > 0 and hf["phase_s"]["policy"] > 0 and hf["step_s"] > 0
    assert sum(hf["phase_share"].values()) == pytest.approx(1.0)
    assert hf["tokens_per_second"]["generate"] > 0 and hf["tokens_per_second"]["step"] > 0
    assert hf["completion_tokens_per_step"] == pytest.approx(8 * hf["history"][-1]["completions/mean_length"])
    assert hf["peak_memory_gib"] is None  # no CUDA allocator on the CPU
    assert hf["rollout_consistency"] == {}  # HF generate reports no engine log-probs to compare
    # the figures are the trainer's own: the run record of the same steps holds the same timings
    metrics = (tmp_path / "work-tiny" / "run-hf" / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in metrics.splitlines()]
    assert [r["timing/generate"] for r in rows] == [h["timing/generate"] for h in hf["history"]]


def test_3b_config_is_qwen25_vl_3b(qwen_path):
    """Built on the meta device (no memory): the parameter count of Qwen/Qwen2.5-VL-3B-Instruct, tied embeddings."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = gpu_check.qwen25_vl_3b_config(AutoConfig.from_pretrained(qwen_path))
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert config.image_token_id == AutoConfig.from_pretrained(qwen_path).image_token_id  # the tokenizer's ids


def test_3b_without_a_gpu_is_refused_in_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the 3B check would run")
    assert gpu_check.main(["--size", "3b", "--out", str(tmp_path / "x.json")]) == 2
    assert capsys.readouterr().err.strip() == ("error: no CUDA device: the 3B check needs a GPU (`--size tiny` runs "
                                               "the same code on the CPU)")
    assert not (tmp_path / "x.json").exists()


class CountingAllocator(gpu_check.PhaseMemory):
    """PhaseMemory over a plain counter in place of the CUDA allocator's statistics (what it reads, nothing else)."""

    def __init__(self):
        super().__init__(enabled=True)
        self.now = self.high = 0

    def allocate(self, gib):
        self.now += gib * gpu_check.GIB
        self.high = max(self.high, self.now)

    def _peak(self):
        return self.high

    def _reset(self):
        self.high = self.now


def test_phase_memory_is_each_phases_own_peak():
    memory = CountingAllocator()
    memory.allocate(10)  # the weights, before any phase
    with memory.phase("policy"):
        memory.allocate(5)
        with memory.phase("generate"):
            memory.allocate(20)  # a KV cache: freed before the policy pass goes on
            memory.allocate(-20)
        memory.allocate(3)
        memory.allocate(-8)
    memory.end_step()
    with memory.phase("generate"):
        memory.allocate(1)
    memory.end_step()
    assert memory.steps == [{"policy": 18.0, "generate": 35.0}, {"generate": 11.0}]
