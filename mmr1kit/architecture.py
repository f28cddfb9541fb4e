"""The architecture figures the memory planner needs, read from a model's config without loading any weight.

`read_architecture(name_or_path)` takes what `model_name_or_path` takes: `"tiny"` / `"tiny-llava"`, a local checkpoint
folder, or a hub id. Hub ids of the models the presets in `configs/gpu/` use are answered offline from the
`config.json` files shipped in `mmr1kit/model_configs/` (the published configs of Qwen2.5-VL-3B / 7B-Instruct,
Qwen2-VL-2B-Instruct and LLaVA-1.5-7B); any other hub id goes through `transformers.AutoConfig` (the hub or its
local cache).

Parameter counts are exact: the model is built from its config on PyTorch's `meta` device (shapes only, no memory)
and its parameters are counted, tied weights once. Under LoRA the adapters are counted the same way, by wrapping the
meta model with `peft` exactly as `mmr1kit.train.peft_config_from` configures it.

Supported families: Qwen2-VL and Qwen2.5-VL (`model_type` `qwen2_vl`, `qwen2_5_vl`; dynamic resolution, image tokens
from `max_pixels`, patch and merge size) and LLaVA (`llava`: a CLIP tower at a fixed input size). Any other config
is refused with the list of the fields the planner needs: it never guesses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "model_configs"
VISION_FAMILIES = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "llava": "clip"}
TEXT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
VISION_FIELDS = {
    "qwen2_vl": ("depth", "embed_dim", "num_heads", "mlp_ratio", "patch_size", "spatial_merge_size",
                 "temporal_patch_size"),
    "qwen2_5_vl": ("depth", "hidden_size", "num_heads", "intermediate_size", "patch_size", "spatial_merge_size",
                   "temporal_patch_size"),
    "clip": ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "patch_size",
             "image_size"),
}


def needed_fields() -> str:
    """The config fields the planner reads, per family (for error messages and docs)."""
    vision = "; ".join(f"{family}: vision_config.{{{', '.join(f)}}}" for family, f in VISION_FIELDS.items())
    return (f"model_type one of {sorted(VISION_FAMILIES)}; text config (text_config or the top level): "
            f"{{{', '.join(TEXT_FIELDS)}}} (num_key_value_heads, head_dim optional); {vision}")


@dataclass(frozen=True)
class Architecture:
    """Sizes of a vision-language model, as the planner uses them.

    Language model: `hidden` (H), `layers` (L), `heads`, `kv_heads`, `head_dim`, `intermediate` (I), `vocab` (V),
    `tied` (LM head shares the input embeddings). Vision tower: `vision` (family: `qwen2_vl`, `qwen2_5_vl`, `clip`),
    `vision_hidden`, `vision_layers`, `vision_heads`, `vision_intermediate`, `patch`, `merge` (spatial merge),
    `image_size` (CLIP's fixed input side, else 0). Parameters: `params` (all, tied once), `vision_params` (tower and
    projector / merger), `head_params` (LM head, 0 when tied), `largest_layer_params` (one decoder layer),
    `largest_tensor` (elements of the largest parameter).
    `dtype` is the checkpoint's (`torch_dtype` of its config): what vLLM loads.
    """

    source: str
    model_type: str
    dtype: str
    params: int
    vision_params: int
    head_params: int
    embed_params: int
    largest_layer_params: int
    largest_tensor: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    vision: str
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    patch: int
    merge: int
    image_size: int

    def image_tokens(self, max_pixels: int) -> int:
        """Language-model tokens of the largest image `max_pixels` allows (Qwen-VL: `max_pixels / (patch * merge)^2`,
        as `smart_resize` rounds both sides to multiples of `patch * merge`; CLIP: fixed)."""
        if self.vision == "clip":
            return (self.image_size // self.patch) ** 2
        return max(1, int(max_pixels) // (self.patch * self.merge) ** 2)

    def image_patches(self, max_pixels: int) -> int:
        """Vision-tower sequence length of that image (`merge^2` patches per token; CLIP adds its class token)."""
        if self.vision == "clip":
            return self.image_tokens(max_pixels) + 1
        return self.image_tokens(max_pixels) * self.merge**2


def shipped_configs() -> list[str]:
    """Hub ids whose config is shipped with mmr1kit (planning works offline for them)."""
    return sorted(p.parent.name.replace("--", "/", 1) for p in SHIPPED.glob("*/config.json"))


def config_location(name_or_path: str) -> str:
    """Where the config of `name_or_path` is read from: a folder path, or the hub id itself."""
    if str(name_or_path).startswith("tiny"):  # "tiny", "tiny-llava", ...: mmr1kit's offline models, built once
        from mmr1kit.models import resolve_model

        name_or_path = resolve_model(name_or_path)
    path = Path(name_or_path)
    if path.is_file() and path.name == "config.json":
        return str(path.parent)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"{name_or_path}: a model folder needs a config.json ({needed_fields()})")
        return str(path)
    shipped = SHIPPED / str(name_or_path).replace("/", "--", 1)
    return str(shipped) if (shipped / "config.json").exists() else str(name_or_path)


def _load_config(name_or_path: str):
    from transformers import AutoConfig

    where = config_location(name_or_path)
    try:
        return AutoConfig.from_pretrained(where)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError or KeyError here
        raise ValueError(
            f"{name_or_path}: cannot read its config ({type(e).__name__}: {str(e).splitlines()[0]}). Give a local "
            f"folder with a config.json, or one of the hub ids shipped offline: {', '.join(shipped_configs())}"
        ) from None


def _require(cfg, names, where: str, source: str) -> dict:
    missing = [n for n in names if getattr(cfg, n, None) is None]
    if missing:
        raise ValueError(f"{source}: the config lacks {where}{{{', '.join(missing)}}}, which the memory planner needs "
                         f"({needed_fields()})")
    return {n: getattr(cfg, n) for n in names}


@functools.lru_cache(maxsize=32)
def read_architecture(name_or_path: str) -> Architecture:
    """The `Architecture` of `name_or_path` (`"tiny"`, a folder, or a hub id), read from its config alone.

    Raises:
        ValueError: the config cannot be read, or its family / fields are not ones the planner knows (the message
            lists the fields needed).
    """
    source = str(name_or_path)
    cfg = _load_config(source)
    model_type = getattr(cfg, "model_type", None)
    if model_type not in VISION_FAMILIES:
        raise ValueError(f"{source}: model_type {model_type!r} is not an architecture the memory planner knows; it "
                         f"needs {needed_fields()}")
    vision = VISION_FAMILIES[model_type]
    text = cfg.get_text_config()
    t = _require(text, TEXT_FIELDS, "text_config.", source)
    v = _require(cfg.vision_config, VISION_FIELDS[vision], "vision_config.", source)
    heads = t["num_attention_heads"]
    head_dim = getattr(text, "head_dim", None) or t["hidden_size"] // heads
    if vision == "qwen2_vl":  # Qwen2-VL's tower: embed_dim wide, a GELU MLP mlp_ratio times wider
        v_hidden, v_inter, v_layers, v_heads = v["embed_dim"], int(v["embed_dim"] * v["mlp_ratio"]), v["depth"], \
            v["num_heads"]
    elif vision == "qwen2_5_vl":
        v_hidden, v_inter, v_layers, v_heads = v["hidden_size"], v["intermediate_size"], v["depth"], v["num_heads"]
    else:
        v_hidden, v_inter, v_layers, v_heads = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], \
            v["num_attention_heads"]
    counts = _parameter_counts(config_location(source))
    dtype = getattr(cfg, "dtype", None) or getattr(text, "dtype", None) or "float32"
    return Architecture(
        source=source, model_type=model_type, dtype=str(dtype).removeprefix("torch."), **counts,
        hidden=t["hidden_size"], layers=t["num_hidden_layers"], heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
        intermediate=t["intermediate_size"], vocab=t["vocab_size"], tied=counts["head_params"] == 0,
        vision=vision, vision_hidden=v_hidden, vision_layers=v_layers, vision_heads=v_heads,
        vision_intermediate=v_inter, patch=v["patch_size"], merge=v.get("spatial_merge_size", 1),
        image_size=v.get("image_size", 0),
    )


def _meta_model(where: str):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(where))
    finally:
        logging.set_verbosity(verbosity)


@functools.lru_cache(maxsize=32)
def _parameter_counts(where: str) -> dict:
    model = _meta_model(where)
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    tied = head is not None and head.weight is embed.weight
    vision = sum(p.numel() for name, p in model.named_parameters()
                 if name.split(".")[0] in ("visual", "vision_tower", "multi_modal_projector")
                 or ".visual." in f".{name}" or ".vision_tower." in f".{name}"
                 or ".multi_modal_projector." in f".{name}")
    layers = model.get_decoder().layers if hasattr(model.get_decoder(), "layers") else []
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "vision_params": vision,
        "head_params": 0 if tied or head is None else head.weight.numel(),
        "embed_params": embed.weight.numel(),
        "largest_layer_params": max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0),
        "largest_tensor": max(p.numel() for p in model.parameters()),
    }


@functools.lru_cache(maxsize=32)
def lora_parameters(name_or_path: str, r: int, alpha: int, target_modules: tuple[str, ...] | None) -> int:
    """Trainable parameters of the LoRA adapters `mmr1kit.train.peft_config_from` would add (`peft` on the meta
    model; `target_modules=None` means PEFT's `"all-linear"`)."""
    from peft import LoraConfig, get_peft_model

    model = _meta_model(config_location(name_or_path))
    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules) if target_modules else "all-linear",
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
