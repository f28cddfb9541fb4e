"""Scale-out pre-flight checks and the rollout consistency check (design decision 8).

Layouts that cannot work fail before any model is loaded, with a message that says what to change:

- `check_layout(config)`: called by `MMR1Config` on construction (cheap, no I/O): a group larger than the completions
  generated per step, DeepSpeed asked for on a CPU-only run, vLLM asked for but not installed, a vLLM tensor-parallel
  size that does not divide the processes, a malformed server URL.
- `check_vllm_server(url, timeout)`: called by `mmr1kit.train` before the trainer is built when `vllm_mode="server"`:
  a bounded HTTP check of the server's `/health` (TRL's own check has no per-request timeout and retries a non-200
  answer forever).
- `check_pixel_bounds(config, model_path)`: warns when vLLM would size images differently from the trainer (TRL builds
  the colocated engine from the checkpoint's own processor config and passes no `mm_processor_kwargs`).

The rollout consistency check compares, every `rollout_check_every` steps, the log-probabilities the rollout engine
reported for the tokens it sampled with the trainer's log-probabilities of the same tokens: `logprob_consistency` is
the math, `rollout_check` the trainer hook. A mismatch means stale weights (a failed sync), different image sizing,
a different chat template or numerics drift; it biases the policy gradient silently.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

logger = logging.getLogger(__name__)



class LayoutError(ValueError):
    """A run layout that cannot work (raised before any model is loaded)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def completions_per_step(config) -> tuple[int, int, int]:
    """`(completions, world, steps)`: completions generated per generation step across all processes.

    `world` is `WORLD_SIZE` (set by `accelerate launch` / `torchrun` before the config is built), `steps` is
    `steps_per_generation` (TRL's default: `gradient_accumulation_steps`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = config.steps_per_generation or config.gradient_accumulation_steps
    per_step = config.generation_batch_size or config.per_device_train_batch_size * world * steps
    return per_step, world, steps


def check_layout(config) -> None:
    """Raise `LayoutError` for a layout that cannot run, naming the field and what would be accepted.

    Cheap and free of I/O: `MMR1Config` calls it on construction, in every process, before any model is loaded.
    """

    def bad(name, message):
        raise LayoutError(f"MMR1Config.{name}={getattr(config, name)!r}: {message}")

    per_step, world, steps = completions_per_step(config)
    g = config.num_generations
    if g is not None and g > per_step:
        if config.generation_batch_size:
            made_of, fix = f"generation_batch_size {per_step}", f"raise generation_batch_size to {g}"
        else:
            made_of = (f"per_device_train_batch_size {config.per_device_train_batch_size} x {world} process(es) x "
                       f"{steps} step(s) per generation")
            fix = (f"raise steps_per_generation to {-(-g // (config.per_device_train_batch_size * world))} or "
                   f"per_device_train_batch_size")
        bad(
            "num_generations",
            f"a group of {g} completions does not fit in the {per_step} completions generated per step ({made_of}); "
            f"{fix}, or lower num_generations to at most {per_step}",
        )

    if config.deepspeed or _flag("ACCELERATE_USE_DEEPSPEED"):
        where = (f"MMR1Config.deepspeed={config.deepspeed!r}" if config.deepspeed
                 else "accelerate launch with a DeepSpeed config (ACCELERATE_USE_DEEPSPEED=true)")
        if config.use_cpu or not _has_cuda():
            raise LayoutError(
                f"{where}: DeepSpeed needs CUDA GPUs and this run is CPU-only (use_cpu={config.use_cpu}, "
                f"CUDA available: {_has_cuda()}); for several CPU processes launch with `accelerate launch "
                f"--config_file configs/accelerate/cpu_2proc.yaml` (DDP over gloo) and no DeepSpeed config"
            )
        if importlib.util.find_spec("deepspeed") is None:
            raise LayoutError(f"{where}: DeepSpeed is not installed: `pip install 'mmr1kit[deepspeed]'`, or launch "
                              f"with configs/accelerate/multi_gpu.yaml (DDP)")

    if config.use_vllm:
        if importlib.util.find_spec("vllm") is None:
            bad(
                "use_vllm",
                "vLLM is not installed in this environment: on a GPU node `pip install 'mmr1kit[vllm]'`; "
                "otherwise set use_vllm=False (rollouts then use transformers' generate)",
            )
        if config.vllm_mode not in ("colocate", "server"):
            bad("vllm_mode", "expected 'colocate' (vLLM inside each training process) or 'server' (trl vllm-serve)")
        if config.vllm_mode == "colocate" and world % config.vllm_tensor_parallel_size:
            bad(
                "vllm_tensor_parallel_size",
                f"must divide the number of processes ({world}); use one of "
                f"{[d for d in range(1, world + 1) if world % d == 0]}",
            )
        if config.vllm_mode == "server":
            url = vllm_server_url(config)
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                name = "vllm_server_base_url" if config.vllm_server_base_url else "vllm_server_host"
                bad(name, f"{url!r} is not an http(s)://host:port URL")


# --- vLLM server reachability ---------------------------------------------------------------------------------------


def vllm_server_url(config) -> str:
    """The server URL TRL will use: `vllm_server_base_url`, else `http://<vllm_server_host>:<vllm_server_port>`."""
    if config.vllm_server_base_url:
        return config.vllm_server_base_url.rstrip("/")
    return f"http://{config.vllm_server_host}:{config.vllm_server_port}"


def check_vllm_server(url: str, timeout: float = 10.0, poll: float = 0.5) -> None:
    """Wait at most `timeout` seconds for `GET <url>/health` to answer 200; raise `ConnectionError` otherwise.

    A refused or unanswered connection is retried until the deadline (the server may still be loading); an HTTP
    answer other than 200 fails at once (something else listens there). Every request has its own timeout, so a
    listener that accepts connections but never answers cannot hang the run.
    """
    health = url.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    last = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(health, timeout=max(min(remaining, 5.0), 0.1)) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:
            raise ConnectionError(
                f"{health} answered HTTP {e.code}: that is not a vLLM server started with `trl vllm-serve` / "
                f"`vllm serve`; check vllm_server_base_url (or vllm_server_host / vllm_server_port)"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            last = getattr(e, "reason", e)
        if time.monotonic() + poll >= deadline:
            raise ConnectionError(
                f"no vLLM server answered at {url} within {timeout:.0f} s (last error: {last}). Start it on the "
                f"generation GPU first (`CUDA_VISIBLE_DEVICES=<gpu> trl vllm-serve --model <model> --port <port>`, "
                f"see docs/scale_out.md), or fix vllm_server_base_url / vllm_server_host / vllm_server_port, "
                f"or set vllm_mode='colocate'"
            )
        time.sleep(poll)


# --- image sizing: rollout engine vs trainer ------------------------------------------------------------------------


def pixel_bounds(model_path) -> tuple[int, int] | None:
    """`(min_pixels, max_pixels)` saved with a Qwen-VL checkpoint's processor, or None if it has none."""
    path = Path(model_path)
    for name in ("preprocessor_config.json", "processor_config.json"):
        file = path / name
        if not file.exists():
            continue
        data = json.loads(file.read_text())
        data = data.get("image_processor", data)
        size = data.get("size") or {}
        lo = size.get("shortest_edge", data.get("min_pixels"))
        hi = size.get("longest_edge", data.get("max_pixels"))
        if lo is not None and hi is not None:
            return int(lo), int(hi)
    return None


def check_pixel_bounds(config, model_path) -> str | None:
    """Warn (and return the message) when vLLM would size images differently from the trainer.

    The trainer's processor uses `config.min_pixels` / `max_pixels`. TRL 1.16 builds the colocated vLLM engine with
    `LLM(model=<path>)` and no `mm_processor_kwargs`, so vLLM reads the bounds saved in the checkpoint; a server reads
    them from its own `--mm-processor-kwargs`. Different bounds give a different number of image tokens.
    """
    if not config.use_vllm or not Path(model_path).is_dir():
        return None
    saved = pixel_bounds(model_path)
    wanted = (config.min_pixels, config.max_pixels)
    if saved is None or saved == wanted:
        return None
    if config.vllm_mode == "server":
        fix = (f"start the server with --mm-processor-kwargs '{{\"min_pixels\": {wanted[0]}, \"max_pixels\": "
               f"{wanted[1]}}}'")
    else:
        fix = ("save the processor with the run's bounds next to the weights: "
               f"`mmr1kit.models.load_processor(path, {wanted[0]}, {wanted[1]}).save_pretrained(path)` (on a copy)")
    message = (
        f"{model_path} saves min/max pixels {saved}, the run uses {wanted} (min_pixels, max_pixels): vLLM sizes "
        f"rollout images by the checkpoint's bounds unless told otherwise; {fix}, or set min_pixels/max_pixels to {saved}"
    )
    warnings.warn(message, stacklevel=2)
    return message


# --- rollout consistency ----------------------------------------------------------------------------------------------


def logprob_consistency(engine_logps: torch.Tensor, trainer_logps: torch.Tensor, mask: torch.Tensor) -> dict:
    r"""
    How far the rollout engine's log-probabilities of its sampled tokens are from the trainer's.

    Args:
        engine_logps (`torch.Tensor` of shape `(B, T)`):
            Log-probabilities the engine (vLLM) reported for the tokens it sampled (TRL's `sampling_per_token_logps`).
            NaN marks a token the engine could not score; it is left out.
        trainer_logps (`torch.Tensor` of shape `(B, T)`):
            The trainer's log-probabilities of the same tokens under the same weights (TRL's `old_per_token_logps`).
        mask (`torch.Tensor` of shape `(B, T)`):
            1 for completion tokens, 0 for padding.

    Returns:
        `dict` with `logp_diff_mean` and `logp_diff_max` (mean and max of `|engine - trainer|` over the valid tokens),
        `logp_diff_sum` and `n_tokens` (to combine processes exactly). With no valid token: zeros.
    """
    if engine_logps.shape != trainer_logps.shape or engine_logps.shape != mask.shape:
        raise ValueError(f"shapes differ: engine {tuple(engine_logps.shape)}, trainer {tuple(trainer_logps.shape)}, "
                         f"mask {tuple(mask.shape)}")
    diff = (engine_logps.float() - trainer_logps.float()).abs()
    valid = mask.bool() & ~torch.isnan(diff)
    n = int(valid.sum())
    if n == 0:
        return {"logp_diff_mean": 0.0, "logp_diff_max": 0.0, "logp_diff_sum": 0.0, "n_tokens": 0}
    picked = diff[valid]
    total = float(picked.sum())
    return {"logp_diff_mean": total / n, "logp_diff_max": float(picked.max()), "logp_diff_sum": total, "n_tokens": n}


def _trainer_logps(trainer, output) -> torch.Tensor:
    """The trainer's log-probs of the completion tokens (TRL skips them when it needs no importance sampling), of the
    distribution vLLM reports: after its suppressed tokens, top-k and top-p (`mmr1kit.sampling`)."""
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    keys = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "image_sizes", "token_type_ids",
            "mm_token_type_ids", "image_position_ids")
    extra = {k: output[k] for k in keys if output.get(k) is not None}
    if getattr(trainer, "processed_logprobs", None) is not None:  # vLLM reports its processed (top-k/p) distribution
        trainer.processed_logprobs.arm(force=True)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, output["completion_ids"].size(1), **extra)
    return logps


def rollout_check(trainer, output: dict) -> dict | None:
    """The trainer hook: every `rollout_check_every` steps, log `rollout/logp_diff_mean` / `rollout/logp_diff_max`.

    Runs when the generation batch carries the engine's log-probs (`sampling_per_token_logps`: vLLM is on). The
    statistics are combined over all processes (token-weighted mean, global max); a mean above
    `rollout_check_threshold` logs a warning that names the likely causes. Returns the global statistics, or None when
    the check did not run. Reads `args.rollout_check_every` (0 turns it off) and `args.rollout_check_threshold`,
    fields of `MMR1Config`.
    """
    engine = output.get("sampling_per_token_logps")
    every = trainer.args.rollout_check_every
    if engine is None or not every or trainer.state.global_step % every:
        return None
    trainer_logps = output.get("old_per_token_logps")
    if trainer_logps is None:
        trainer_logps = _trainer_logps(trainer, output)
    local = logprob_consistency(engine, trainer_logps, output["completion_mask"])
    device = engine.device
    sums = trainer.accelerator.reduce(
        torch.tensor([local["logp_diff_sum"], float(local["n_tokens"])], device=device, dtype=torch.float64),
        reduction="sum")
    top = trainer.accelerator.gather(torch.tensor([local["logp_diff_max"]], device=device)).max()
    n = float(sums[1])
    stats = {"logp_diff_mean": float(sums[0]) / n if n else 0.0, "logp_diff_max": float(top), "n_tokens": int(n)}
    mode = "train" if trainer.model.training else "eval"
    trainer._metrics[mode]["rollout/logp_diff_mean"].append(stats["logp_diff_mean"])
    trainer._metrics[mode]["rollout/logp_diff_max"].append(stats["logp_diff_max"])
    threshold = trainer.args.rollout_check_threshold
    if stats["logp_diff_mean"] > threshold and trainer.accelerator.is_main_process:
        logger.warning(
            "step %d: the rollout engine's log-probs differ from the trainer's by %.4f nats per token on average "
            "(max %.4f, threshold %.4f): check that weights are synced, that both size images alike "
            "(min_pixels/max_pixels) and use the same chat template and dtype", trainer.state.global_step,
            stats["logp_diff_mean"], stats["logp_diff_max"], threshold)
    return stats


def collapse_image_tokens(prompt_ids: list[list[int]], image_token_id: int) -> list[list[int]]:
    """Replace each run of `image_token_id` by a single one: the form vLLM expands against the images it is given.

    TRL 1.16 hands vLLM the processor's prompt ids, whose image placeholders are already expanded to one token per
    image feature; vLLM (0.31, 0.32) expands the first placeholder of each image again, so the rollout engine samples
    from a corrupted prompt (huggingface/trl#6294). Colocate mode only: the server path places features itself.
    """
    out = []
    for ids in prompt_ids:
        kept = [t for i, t in enumerate(ids) if t != image_token_id or i == 0 or ids[i - 1] != image_token_id]
        out.append(kept)
    return out


def feed_vllm_unexpanded_images(vllm_generation, image_token_id: int):
    """Make a colocated TRL `VLLMGeneration` send vLLM one placeholder per image (`collapse_image_tokens`).

    Wraps the instance's `generate`; the trainer keeps its expanded prompt ids for the training forward. Server mode is
    left alone (TRL places precomputed image features on the expanded ids there). Returns `vllm_generation`.
    """
    if getattr(vllm_generation, "mode", None) != "colocate" or getattr(vllm_generation, "_mmr1kit_unexpanded", False):
        return vllm_generation
    generate = vllm_generation.generate

    def generate_unexpanded(prompts, images, num_generations, profiler=None):
        if images is not None:
            prompts = collapse_image_tokens(prompts, image_token_id)
        return generate(prompts, images, num_generations, profiler)

    vllm_generation.generate = generate_unexpanded
    vllm_generation._mmr1kit_unexpanded = True
    return vllm_generation
