"""Pre-flight checks of impossible layouts (fail fast, say what to change) and the rollout consistency check."""

import http.server
import importlib.util
import logging
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmr1kit.config import MMR1Config
from mmr1kit.scale import (
    LayoutError,
    check_layout,
    check_pixel_bounds,
    check_vllm_server,
    collapse_image_tokens,
    feed_vllm_unexpanded_images,
    logprob_consistency,
    pixel_bounds,
    rollout_check,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


# --- layouts ------------------------------------------------------------------------------------------------------


def test_group_larger_than_the_completions_per_step_names_the_fix():
    with pytest.raises(LayoutError, match=r"num_generations=32.*16 completions.*steps_per_generation to 8"):
        MMR1Config.from_dict(dict(per_device_train_batch_size=4, num_generations=32, steps_per_generation=4))
    config = MMR1Config.from_dict(dict(per_device_train_batch_size=4, num_generations=32, steps_per_generation=8))
    assert config.generation_batch_size == 32  # MMR1's large groups: one group of 32 per generation


def test_world_size_counts_in_the_layout(monkeypatch):
    config = MMR1Config.from_dict(dict(per_device_train_batch_size=2, num_generations=2))
    monkeypatch.setenv("WORLD_SIZE", "2")  # what `accelerate launch` sets before the config is built
    with pytest.raises(LayoutError, match=r"per_device_train_batch_size 2 x 2 process\(es\)"):
        MMR1Config.from_dict(dict(per_device_train_batch_size=2, num_generations=8))
    config.num_generations = 4
    config.generation_batch_size = config.steps_per_generation = None  # as before __post_init__ derives them
    check_layout(config)  # 2 completions on each of 2 processes: one group of 4 split across them


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")
def test_deepspeed_on_a_cpu_only_run_fails_before_anything_loads(monkeypatch):
    start = time.perf_counter()
    with pytest.raises(LayoutError, match=r"deepspeed=.*DeepSpeed needs CUDA GPUs.*cpu_2proc\.yaml"):
        MMR1Config.from_dict(dict(deepspeed={"zero_optimization": {"stage": 2}}))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # `accelerate launch --config_file .../zero2.yaml`
    with pytest.raises(LayoutError, match=r"accelerate launch with a DeepSpeed config.*CPU-only"):
        MMR1Config.from_dict({})
    assert time.perf_counter() - start < 5


@pytest.mark.skipif(HAS_VLLM, reason="checks an environment without vLLM")
def test_vllm_asked_for_without_vllm_installed():
    with pytest.raises(LayoutError, match=r"use_vllm=True: vLLM is not installed.*mmr1kit\[vllm\].*use_vllm=False"):
        MMR1Config.from_dict(dict(use_vllm=True))


def test_vllm_layout_rules_on_the_config_fields(monkeypatch):
    config = MMR1Config.from_dict({})
    config.use_vllm = True
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # as if vLLM were installed
    monkeypatch.setenv("WORLD_SIZE", "2")
    config.per_device_train_batch_size = 4
    config.vllm_tensor_parallel_size = 3
    with pytest.raises(LayoutError, match=r"vllm_tensor_parallel_size=3: must divide the number of processes \(2\)"):
        check_layout(config)
    config.vllm_tensor_parallel_size = 1
    config.vllm_mode, config.vllm_server_base_url = "server", "localhost:8000"
    with pytest.raises(LayoutError, match=r"vllm_server_base_url.*not an http"):
        check_layout(config)
    config.vllm_server_base_url = "http://10.1.2.3:8000"
    check_layout(config)  # well formed: reachability is checked at launch, not in the constructor


# --- vLLM server reachability -------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_url_with_nothing_listening_fails_within_the_timeout():
    url = f"http://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=rf"no vLLM server answered at {url} within 2 s.*trl vllm-serve"):
        check_vllm_server(url, timeout=2)
    assert 1.5 < time.perf_counter() - start < 5  # retried until the deadline (a server may still be loading), no more


def test_listener_that_never_answers_cannot_hang():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # accepts connections into the backlog, never replies
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(ConnectionError, match="no vLLM server answered"):
            check_vllm_server(url, timeout=2)
        assert time.perf_counter() - start < 6


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [200, 404])
def test_server_answers(status):
    handler = type("H", (Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        start = time.perf_counter()
        if status == 200:
            check_vllm_server(url, timeout=5)
        else:  # something else listens there: fail at once (TRL's own check would retry it forever)
            with pytest.raises(ConnectionError, match=r"answered HTTP 404: that is not a vLLM server"):
                check_vllm_server(url, timeout=30)
        assert time.perf_counter() - start < 3
    finally:
        server.shutdown()
        server.server_close()


# --- image sizing ---------------------------------------------------------------------------------------------------


def test_pixel_bounds_of_the_rollout_engine_and_the_trainer(qwen_path):
    assert pixel_bounds(qwen_path) == (56 * 56, 112 * 112)  # saved by the tiny model's processor
    same = SimpleNamespace(use_vllm=True, vllm_mode="colocate", min_pixels=56 * 56, max_pixels=112 * 112)
    assert check_pixel_bounds(same, qwen_path) is None
    bigger = SimpleNamespace(use_vllm=True, vllm_mode="server", min_pixels=56 * 56, max_pixels=224 * 224)
    with pytest.warns(UserWarning, match=r"--mm-processor-kwargs '\{\"min_pixels\": 3136, \"max_pixels\": 50176\}'"):
        check_pixel_bounds(bigger, qwen_path)
    assert check_pixel_bounds(SimpleNamespace(**{**vars(bigger), "use_vllm": False}), qwen_path) is None


def test_collapse_image_tokens_keeps_one_placeholder_per_image():
    pad = 9
    assert collapse_image_tokens([[1, 9, 9, 9, 2, 3, 9, 9, 4], [5, 6]], pad) == [[1, 9, 2, 3, 9, 4], [5, 6]]


# --- rollout consistency ------------------------------------------------------------------------------------------


def test_logprob_consistency_math():
    trainer = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    engine = torch.tensor([[-1.1, -2.0, -2.5], [-0.5, float("nan"), 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    stats = logprob_consistency(engine, trainer, mask)
    # valid tokens: |0.1|, 0, |0.5|, 0 (the NaN token and the padding are left out)
    assert stats["n_tokens"] == 4
    assert stats["logp_diff_mean"] == pytest.approx(0.6 / 4)
    assert stats["logp_diff_max"] == pytest.approx(0.5)
    assert logprob_consistency(engine, trainer, torch.zeros_like(mask))["logp_diff_mean"] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        logprob_consistency(engine[:, :2], trainer, mask)


@pytest.mark.slow
def test_rollout_check_hook_on_a_real_batch(qwen_path, counting_dir, tmp_path, caplog):
    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    config = MMR1Config.from_dict(dict(run_dir=str(tmp_path / "run"), per_device_train_batch_size=8,
                                       num_generations=4, max_completion_length=8, save_strategy="no", beta=0.0))
    trainer = MMR1Trainer(model=str(qwen_path), reward_funcs=[lambda completions, **k: [1.0] * len(completions)],
                          args=config, train_dataset=load_dataset(counting_dir, "train", config), record=False)
    trainer.model.train()
    output = trainer._generate_and_score_completions([trainer.train_dataset[i // 4] for i in range(8)])
    assert rollout_check(trainer, output) is None  # transformers' generate reports no engine log-probs
    assert output.get("old_per_token_logps") is None  # on-policy without vLLM: the hook computes them itself

    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], 1)
    mask = torch.cat([output["prompt_mask"], output["completion_mask"]], 1)
    with torch.no_grad():  # the trainer's log-probs of the sampled tokens, as TRL computes `old_per_token_logps`
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, output["completion_ids"].size(1), pixel_values=output["pixel_values"],
            image_grid_thw=output["image_grid_thw"], num_images=output["num_images"],
            mm_token_type_ids=output["mm_token_type_ids"])
    shift = torch.zeros_like(logps)
    shift[0, 0] = 0.8  # one token off by 0.8 nats: mean = 0.8 / number of completion tokens
    output["sampling_per_token_logps"] = logps + shift
    with caplog.at_level(logging.WARNING, logger="mmr1kit.scale"):
        stats = rollout_check(trainer, output)
    n = int(output["completion_mask"].sum())
    assert stats["n_tokens"] == n
    assert stats["logp_diff_max"] == pytest.approx(0.8, abs=1e-4)
    assert stats["logp_diff_mean"] == pytest.approx(0.8 / n, abs=1e-4)
    assert trainer._metrics["train"]["rollout/logp_diff_max"][-1] == stats["logp_diff_max"]
    assert not caplog.records  # 0.8 / 64 tokens is under the 0.05 default threshold

    output["sampling_per_token_logps"] = logps + 0.3  # every token off: stale weights, say
    trainer.args.rollout_check_threshold = 0.1
    with caplog.at_level(logging.WARNING, logger="mmr1kit.scale"):
        assert rollout_check(trainer, output)["logp_diff_mean"] == pytest.approx(0.3, abs=1e-4)
    assert "differ from the trainer's by 0.3000 nats" in caplog.text
    trainer.args.rollout_check_every = 0
    assert rollout_check(trainer, output) is None


def test_feed_vllm_unexpanded_images_wraps_colocate_generation_only():
    calls = []

    def generate(prompts, images, num_generations, profiler=None):  # stands in for TRL's VLLMGeneration.generate
        calls.append(prompts)
        return prompts

    colocate = SimpleNamespace(mode="colocate", generate=generate)
    server = SimpleNamespace(mode="server", generate=generate)
    feed_vllm_unexpanded_images(colocate, 9)
    feed_vllm_unexpanded_images(colocate, 9)  # idempotent: one wrapper
    feed_vllm_unexpanded_images(server, 9)
    assert colocate.generate([[1, 9, 9, 2]], [["img"]], 4) == [[1, 9, 2]]
    assert colocate.generate([[1, 9, 9, 2]], None, 4) == [[1, 9, 9, 2]]  # text-only batches pass unchanged
    assert server.generate is generate


# --- presets and launch configs -------------------------------------------------------------------------------------


def test_gpu_presets_are_valid_configs_apart_from_the_hardware():
    import yaml

    from mmr1kit.config import MMR1Config

    root = Path(__file__).resolve().parent.parent / "configs"
    for name, mode in (("gpu/vllm/colocate.yaml", "colocate"), ("gpu/vllm/server.yaml", "server")):
        values = yaml.safe_load((root / name).read_text())
        assert values["use_vllm"] and values["vllm_mode"] == mode
        assert set(values) <= MMR1Config.field_names()
        cpu = {**values, "use_vllm": False, "use_cpu": True, "bf16": False, "model_name_or_path": "tiny"}
        assert MMR1Config.from_dict(cpu).num_generations == values["num_generations"]


def test_accelerate_configs_load_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in root.glob("*.yaml")}
    assert kinds == {"cpu_2proc": "MULTI_GPU", "single_gpu": "NO", "multi_gpu": "MULTI_GPU", "zero2": "DEEPSPEED",
                     "zero3": "DEEPSPEED", "zero3_offload": "DEEPSPEED", "fsdp": "FSDP"}
