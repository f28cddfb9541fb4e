"""Generic checks of `MMR1Config` fields: types, ranges and the command line, before anything loads.

`MMR1Config.__post_init__` calls `check_fields` first, so every way of building a config (a dict of notebook
parameters, a YAML preset, `python -m mmr1kit.train --field value`, the Python API) gets the same checks and the same
messages, one line per bad field:

    MMR1Config.learning_rate=-0.0001: must be > 0
    MMR1Config.max_steps='fifty': expected an integer

Strings are converted to the field's type where that is unambiguous (a preset's `learning_rate: 1e-4`, which YAML
reads as a string, or any value on the command line). The rules of MMR1's own options (estimators, schedules,
templates, group sizes) stay in `mmr1kit.config`; this module holds what is true of any field of its type.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout that holds data_cards/ (editable installs)
_NUMBER = re.compile(r"[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE = ("none", "null", "~", "")

# name -> (test, what is accepted); None passes (a field that may be unset is unset)
_GT0, _GE0 = (lambda v: v > 0, "must be > 0"), (lambda v: v >= 0, "must be >= 0")
_GE1 = (lambda v: v >= 1, "must be >= 1")
RANGES = {
    **dict.fromkeys(("learning_rate", "adam_epsilon", "max_completion_length", "num_train_epochs", "logging_steps",
                     "save_steps", "eval_steps", "reward_scale", "lora_alpha", "repetition_penalty",
                     "vllm_server_timeout", "rollout_check_threshold"), _GT0),
    **dict.fromkeys(("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "num_iterations", "generation_batch_size", "steps_per_generation", "lora_r", "save_total_limit",
                     "vllm_tensor_parallel_size", "max_prompt_length", "tracker_rollouts_max_rows"), _GE1),
    **dict.fromkeys(("weight_decay", "warmup_steps", "max_grad_norm", "seed", "data_seed", "dataloader_num_workers",
                     "top_k", "epsilon", "epsilon_high", "beta", "max_nonfinite_steps", "exact_kl_every",
                     "rollout_check_every", "label_smoothing_factor", "tracker_rollouts_every",
                     "capsule_every"), _GE0),
    "max_steps": (lambda v: v == -1 or v >= 1, "must be >= 1 (or -1: num_train_epochs decides)"),
    "top_p": (lambda v: 0 < v <= 1, "a probability mass: must be in (0, 1]"),
    "min_p": (lambda v: 0 <= v <= 1, "a probability: must be in [0, 1]"),
    "top_entropy_quantile": (lambda v: 0 < v <= 1, "a quantile: must be in (0, 1]"),
    "vllm_gpu_memory_utilization": (lambda v: 0 < v <= 1, "a fraction of GPU memory: must be in (0, 1]"),
    "lora_dropout": (lambda v: 0 <= v < 1, "a probability: must be in [0, 1)"),
    "adam_beta1": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


class FieldError(ValueError):
    """One bad field: `MMR1Config.<name>=<value>: <what is accepted>`."""

    def __init__(self, name, value, message):
        self.name, self.value, self.message = name, value, message
        super().__init__(f"MMR1Config.{name}={value!r}: {message}")


def _hints(cls) -> dict:
    cached = cls.__dict__.get("_mmr1kit_hints")
    if cached is None:
        cached = typing.get_type_hints(cls)
        setattr(cls, "_mmr1kit_hints", cached)
    return cached


def _parts(hint) -> tuple[list, bool]:
    """(the types of a hint other than None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _number(text: str):
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError
    return float(text) if any(c in text.lower() for c in ".ein") else int(text.replace("_", ""))


def coerce(name: str, value, hint):
    """`value` as the type `hint` of field `name`; raises `FieldError` naming what is accepted.

    Only plain hints are checked (`int`, `float`, `bool`, `str`, `list[...]`, each optionally `| None`); unions of
    several types (`str | bool`, enums) are left to TRL and transformers, which check them in their own `__post_init__`.
    """
    kinds, nullable = _parts(hint)
    if value is None:
        return value  # None is each library's "unset"; a field that needs a value is checked where it is used
    if nullable and isinstance(value, str) and value.strip().lower() in _NONE and str not in kinds:
        return None  # `--train_sample_size none`; a field that takes strings keeps "none" (report_to="none")
    if len(kinds) != 1:
        return value
    kind, origin = kinds[0], typing.get_origin(kinds[0])
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise FieldError(name, value, "expected true or false")
    if kind in (int, float):
        if isinstance(value, str):
            try:
                value = _number(value)
            except ValueError:
                raise FieldError(name, value, f"expected {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(name, value, f"expected {'an integer' if kind is int else 'a number'}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise FieldError(name, value, "expected an integer")
            return int(value)
        if math.isnan(value):
            raise FieldError(name, value, "expected a number, not NaN")
        return value
    if kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, bool)):  # TRL's string options take booleans too (scale_rewards=True)
            raise FieldError(name, value, "expected a string")
        return value
    if origin is list:
        (item,) = typing.get_args(kind) or (None,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise FieldError(name, value, "expected a list")
        if item in (int, float, str, bool):
            return [coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    return value


def check_fields(config) -> None:
    """Coerce and check every field of `config` in place; raise one `ValueError` with a line per bad field."""
    import dataclasses

    hints, errors = _hints(type(config)), []
    for f in dataclasses.fields(config):
        if not f.init or f.name not in hints:
            continue
        try:
            value = coerce(f.name, getattr(config, f.name), hints[f.name])
            setattr(config, f.name, value)
            rule = RANGES.get(f.name)
            if rule is not None and value is not None and not rule[0](value):
                raise FieldError(f.name, value, rule[1])
        except FieldError as e:
            errors.append(str(e))
    if not errors:
        errors += _cross_field(config)
    if errors:
        raise ValueError("\n".join(errors))
    config.dataset = project_path(config.dataset)


def _cross_field(config) -> list[str]:
    import dataclasses

    errors = []
    allow = config.allow_changes
    unknown = unknown_names(allow, {f.name for f in dataclasses.fields(config) if f.init})
    if unknown:
        errors.append(f"MMR1Config.allow_changes={allow!r}: unknown field(s) {unknown}")
    funcs = config.reward_funcs
    names = [r.strip() for r in funcs.split(",") if r.strip()] if isinstance(funcs, str) else list(funcs or [])
    weights = config.reward_weights
    if weights is not None and len(weights) != len(names):
        errors.append(f"MMR1Config.reward_weights={weights!r}: {len(weights)} weight(s) for {len(names)} reward "
                      f"function(s) {names}; give one weight per function (or none: all 1.0)")
    return errors


def project_path(value: str) -> str:
    """A relative path that does not exist here but exists in the mmr1kit checkout (its `data_cards/`), made absolute.

    The defaults name files of the checkout (`data_cards/synthetic_counting.md`); this makes them work from any
    working directory. Any other path is returned as given.
    """
    if not value or Path(value).is_absolute() or Path(value).exists():
        return value
    candidate = PROJECT_ROOT / value
    return str(candidate) if candidate.exists() else value


def unknown_names(names, known) -> str | None:
    """`"'lerning_rate' (did you mean learning_rate?)"` for the names not in `known`, or None when all are known."""
    unknown = [n for n in names if n not in known]
    if not unknown:
        return None
    said = []
    for name in unknown:
        hints = difflib.get_close_matches(str(name), list(known), n=2)
        said.append(f"{name!r}" + (f" (did you mean {' or '.join(hints)}?)" if hints else ""))
    return "; ".join(said)


def parse_argv(argv: list[str], known) -> dict:
    """`--name value`, `--name v1 v2` (a list), `--name` (true), `--no_name` (false), `--name=value` -> a dict of
    strings (lists of strings), converted later by `coerce`.

    Hand-written rather than `HfArgumentParser`: that parser prints a 1,265-line help, refuses negative numbers in
    exponent form (`--learning_rate -1e-4`, an argparse limitation before Python 3.13) and words its type errors
    differently from a preset's; here the command line goes through the very checks a preset does.
    """
    values, i, bad = {}, 0, []
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) == 2:
            bad.append(token)
            i += 1
            continue
        name, eq, inline = token[2:].partition("=")
        i += 1
        if eq:
            given = [inline]
        else:
            given = []
            while i < len(argv) and not (argv[i].startswith("--") and len(argv[i]) > 2):
                given.append(argv[i])
                i += 1
        if name not in known and name.startswith("no_") and name[3:] in known and not given:
            name, given = name[3:], ["false"]
        if name not in known:
            bad.append(f"--{name}")
            continue
        values[name] = "true" if not given else given[0] if len(given) == 1 else given
    if bad:
        hint = unknown_names([b.lstrip("-") for b in bad if b.startswith("--")], known)
        raise ValueError(f"MMR1Config: unknown command-line argument(s) {bad}" + (f": {hint}" if hint else ""))
    return values
