"""The GPU presets (`configs/gpu/`), and the warning for a real model run with the CPU smoke-run sizes.

`MMR1Config`'s defaults are sized for a CPU smoke run on the tiny model (learning rate 1e-4, 16-token completions,
`max_pixels` 12,544, 20 steps, temperature 1.0 without top-p / top-k). On a real checkpoint those settings train
nothing like MMR1; the presets under `configs/gpu/` carry MMR1's. `warn_smoke_sizes` is called when the config is
built, before any weights load, and warns once, naming each value in a smoke-run range (learning rate >= 1e-4,
completions under 64 tokens, `max_pixels` <= 12,544, 1 to 50 steps; temperature 1.0 without top-p / top-k next to
any of them) and the preset to use.
"""

import os
import warnings
from pathlib import Path

import yaml

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "gpu"
TINY_NAMES = ("tiny", "tiny-llava")
TINY_MAX_BYTES = 50_000_000  # the tiny models' weights are a few MB; a 2B model's are GBs
# field -> (is it a CPU smoke-run size?, MMR1's value in its published scripts). The smoke ranges hold MMR1Config's
# defaults (1e-4, 16 tokens, 12,544 pixels, 20 steps) and notebook 01's (12 tokens, 4 steps).
SMOKE_SIZES = {
    "learning_rate": (lambda v: v >= 1e-4, 1e-6),
    "max_completion_length": (lambda v: v is not None and v < 64, 768),
    "max_pixels": (lambda v: v <= 112 * 112, 1_000_000),
    "max_steps": (lambda v: 0 < v <= 50, "-1 (one epoch)"),
}


class SmokeSizeWarning(UserWarning):
    """A real model is configured with sizes meant for a CPU smoke run on the tiny model."""


def is_tiny(model_name_or_path) -> bool:
    """`"tiny"` / `"tiny-llava"`, or a local checkpoint folder whose weight files total under 50 MB."""
    name = str(model_name_or_path)
    if name in TINY_NAMES:
        return True
    path = Path(name).expanduser()
    if not path.is_dir():
        return False  # a hub id, or a path on another machine: treated as a real model
    weights = [f for pattern in ("*.safetensors", "*.bin") for f in path.glob(pattern)]
    return bool(weights) and sum(f.stat().st_size for f in weights) < TINY_MAX_BYTES


def gpu_presets(model_name_or_path=None) -> list[Path]:
    """Every preset under `configs/gpu/`: MMR1's own for `model_name_or_path` first, then the model's, then MMR1's."""
    if not PRESET_DIR.is_dir():
        return []
    presets = sorted(PRESET_DIR.glob("*.yaml"))
    model = str(model_name_or_path).rstrip("/").split("/")[-1].lower()
    same = [p for p in presets
            if str((yaml.safe_load(p.read_text()) or {}).get("model_name_or_path", "")).split("/")[-1].lower() == model]
    mmr1 = [p for p in presets if p.stem.startswith("mmr1_")]  # MMR1's own published scripts
    order = [p for p in same if p in mmr1] + same + mmr1 + presets
    return list(dict.fromkeys(order))


def smoke_sizes(config) -> dict:
    """`{field: value}` of the fields of `config` at a CPU smoke-run size (see `SMOKE_SIZES`)."""
    found = {name: getattr(config, name) for name, (smoke, _) in SMOKE_SIZES.items() if smoke(getattr(config, name))}
    # TRL's default sampling is named too, but alone it is a choice (the vLLM presets sample at 1.0), not a smoke size
    if found and config.temperature == 1.0 and config.top_p == 1.0 and not config.top_k:
        found["temperature"] = "1.0 without top_p / top_k"
    return found


def warn_smoke_sizes(config) -> str | None:
    """Warn (`SmokeSizeWarning`, on the main process) when a model that is not a tiny one has CPU smoke-run sizes.

    Returns the message, or `None` when there is nothing to say.
    """
    if os.environ.get("RANK", "0") != "0" or is_tiny(config.model_name_or_path):
        return None  # one warning per run: the main process of a launch says it
    found = smoke_sizes(config)
    if not found:
        return None
    values = ", ".join(f"{k}={v}" for k, v in found.items())
    mmr1 = ", ".join(f"{k}={SMOKE_SIZES[k][1]}" for k in found if k in SMOKE_SIZES)
    mmr1 += ", temperature=0.9 with top_p=0.9, top_k=50" if "temperature" in found else ""
    presets = gpu_presets(config.model_name_or_path)
    root = PRESET_DIR.parent.parent
    suggestion = (f"start from a preset, e.g. {presets[0].relative_to(root)} (all in configs/gpu/)" if presets
                  else "start from a preset in the repository's configs/gpu/")
    message = (f"MMR1Config: model {config.model_name_or_path} with CPU smoke-run sizes ({values}); MMR1 used "
               f"{mmr1}: {suggestion}")
    warnings.warn(message, SmokeSizeWarning, stacklevel=4)  # the caller of MMR1Config(...)
    return message
