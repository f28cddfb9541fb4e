"""The objective lab: replay one captured generation batch (`mmr1kit.capsules`) under other objectives.

    mmr1kit replay RUN --step N --grid kl_approximator=k1,k2,k3,exact --grid loss_type=grpo,dapo,dr_grpo
    replay(run, step, {"kl_approximator": ["k1", "k2"]})

Training once per objective compares objectives through different batches: sampling noise hides the difference.
Here the batch is held fixed. For each variant (a point of the grid's cartesian product, the run's own config
included) a real `MMR1Trainer` is built with the variant's `MMR1Config`, the capsule's weights are loaded (the
weights BEFORE step N's optimizer update, those the step's loss was computed with), and its own loss
(`compute_loss` -> `_compute_loss`, as in training) runs on the capsule's micro-batches, so replay cannot drift from
training. For each variant it reports:

- `loss` and `grad_norm` (pre-clip, as logged); for the run's own config also the logged values of that step;
- per-token weights `d loss / d logp_t` `(N, T)`: the gradient reaching each sampled token's log-prob. Terms of the
  whole distribution (the exact KL, the entropy term) reach the weights through the hidden states, not through
  `logp_t`, and are not part of these weights;
- the cosine similarity between the variants' gradients (all parameters, before clipping);
- the one-step effect of the optimizer step the run would have taken: gradient clipped to `max_grad_norm`, then
  the run's optimizer (AdamW) with the run's moments before step N (saved in the capsule) at the learning rate the
  schedule gave step N (scaled by `learning_rate / run's learning_rate` when the grid changes it). Reported: the mean
  change of per-token log-prob of rewarded (advantage > 0) and unrewarded (advantage < 0) completions, the change
  of mean entropy, and the exact KL to the reference before and after.
  Why the run's optimizer state and not a fresh AdamW: a fresh AdamW's first step is `lr * g / (|g| + eps)`,
  a sign step of the same size for every objective; with the run's moments the step is the one training took (for
  the run's own config, exactly: the weights after it equal checkpoint N's).

The estimators k1 / k2 / k3 and the exact KL at the capsule's weights are reported per token `(N, T)` too
(`ReplayResult.estimators`), for their bias and spread on the same tokens.

Only objective settings can vary (`OBJECTIVE_FIELDS`); a field that changes the batch (group size, lengths,
temperature, model) cannot be replayed on a fixed one. Every grid value is checked by `MMR1Config` before any weights
load; a step without a capsule lists the steps that have one.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmr1kit.capsules import capsule_steps
from mmr1kit.replay_steps import Lab, pad

# MMR1Config fields that only change how the loss and the optimizer step treat a fixed batch.
OBJECTIVE_FIELDS = (
    "loss_type", "beta", "use_kl", "kl_approximator", "use_bias_correction_kl", "entropy_reg", "entropy_weight",
    "epsilon", "epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile",
    "off_policy_mask_threshold", "entropy_coef", "use_adaptive_entropy", "sapo_temperature_pos",
    "sapo_temperature_neg", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg",
    "vllm_importance_sampling_correction", "learning_rate", "max_grad_norm", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon",
)


@dataclass
class Variant:
    """One point of the grid: its label, the grid values, the checked config, whether it is the run's own."""

    label: str
    values: dict
    config: object
    is_run: bool = False


@dataclass
class ReplayResult:
    """What `replay` measured on one capsule. Arrays cover the capsule's `N` completions (every micro-batch, in
    order), padded to the longest `T`; `mask` `(N, T)` marks the completion tokens the loss reads."""

    run_dir: Path
    step: int
    variants: pd.DataFrame  # one row per variant: grid values, loss, grad_norm, one-step effects
    cosine: pd.DataFrame  # (V, V) gradient cosine similarity, indexed by label
    completions: pd.DataFrame  # one row per (variant, completion): length, advantage, reward, weight sums, dlogp
    token_weights: dict[str, np.ndarray]  # label -> (N, T) d loss / d logp_t
    estimators: dict[str, np.ndarray]  # "k1", "k2", "k3", "exact" -> (N, T) per-token values at the capsule weights
    tokens: list[list[str]]  # per completion, its tokens decoded one by one
    mask: np.ndarray  # (N, T)
    advantages: np.ndarray  # (N,)
    rewards: np.ndarray  # (N,) weighted sum of the reward functions
    info: dict = field(default_factory=dict)  # capsule facts: lr, temperature, sizes, logged loss / grad norm

    def estimator_table(self) -> pd.DataFrame:
        """Per estimator (k1, k2, k3, exact): its mean over the completion tokens, the exact KL's, the bias (mean of
        estimator - exact) and the spread (standard deviation of estimator - exact)."""
        mask = self.mask > 0
        exact = self.estimators["exact"][mask]
        rows = []
        for name, values in self.estimators.items():
            diff = values[mask] - exact
            rows.append({"estimator": name, "mean": float(values[mask].mean()), "exact_mean": float(exact.mean()),
                         "bias": float(diff.mean()), "spread": float(diff.std())})
        return pd.DataFrame(rows)

    def save(self, folder) -> Path:
        """Write `replay.json` (every table and array, lists of floats) into `folder`; return its path."""
        from mmr1kit.runs import write_json

        arrays = {"token_weights": {k: v.tolist() for k, v in self.token_weights.items()},
                  "estimators": {k: v.tolist() for k, v in self.estimators.items()}}
        record = {"run_dir": str(self.run_dir), "step": self.step, "info": self.info,
                  "variants": self.variants.to_dict("records"), "cosine": self.cosine.to_dict("split"),
                  "completions": self.completions.to_dict("records"), "tokens": self.tokens,
                  "mask": self.mask.tolist(), "advantages": self.advantages.tolist(),
                  "rewards": self.rewards.tolist(), **arrays}
        return write_json(Path(folder) / "replay.json", record)


# --- input checks (nothing loads) ----------------------------------------------------------------------------------


def parse_grid(specs) -> dict[str, list[str]]:
    """`["kl_approximator=k1,k2", "loss_type=grpo"]` -> `{"kl_approximator": ["k1", "k2"], "loss_type": ["grpo"]}`."""
    from mmr1kit.sweep import parse_grid as parse_one

    grid = {}
    for spec in specs or []:
        name, values = parse_one(spec)
        if name in grid:
            raise ValueError(f"--grid {name!r} given twice")
        grid[name] = values
    return grid


def check_step(run_dir, step: int | None) -> int:
    """The capsule step to replay (`None`: the latest); a step without a capsule names those that have one."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json)")
    steps = capsule_steps(run_dir)
    if not steps:
        raise ValueError(f"{run_dir}: the run kept no capsules; train it with capsule_every > 0 (MMR1Config) to "
                         f"replay its steps")
    if step is None:
        return steps[-1]
    if int(step) not in steps:
        raise ValueError(f"{run_dir}: no capsule of step {step}; steps with a capsule: "
                         f"{', '.join(map(str, steps))}")
    return int(step)


def variants(run_dir, grid: dict | None = None, workdir=None) -> list[Variant]:
    """The checked config of every grid point (the run's own config first when the grid does not contain it).

    Raises `ValueError`, one line per bad name or value, before any weights load.
    """
    from mmr1kit.config import MMR1Config
    from mmr1kit.config_checks import unknown_names
    from mmr1kit.run_folder import config_from_record, recorded_config

    grid = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in (grid or {}).items()}
    errors = []
    for name in grid:
        if name not in OBJECTIVE_FIELDS:
            known = unknown_names([name], MMR1Config.field_names())
            what = f"unknown field {known}" if known else "not an objective field: it changes the batch itself"
            errors.append(f"replay --grid {name}: {what}; replayable: {', '.join(OBJECTIVE_FIELDS)}")
    if errors:
        raise ValueError("\n".join(errors))
    recorded = recorded_config(run_dir)
    workdir = str(workdir or Path(tempfile.gettempdir()) / "mmr1kit-replay")  # checked, not created
    # replay never samples, writes no record and starts no engine
    fixed = {"run_dir": workdir, "output_dir": workdir, "report_to": "none", "resume_from_checkpoint": None,
             "overwrite_run_dir": False, "allow_changes": [], "use_vllm": False, "push_to_hub": False}
    run = config_from_record(MMR1Config, recorded, fixed)
    for name, values in grid.items():  # each value alone first: one line per bad value, not per combination
        for value in values:
            try:
                config_from_record(MMR1Config, recorded, {**fixed, name: value})
            except ValueError as e:
                errors += [f"replay --grid {name}={value}: {line}" for line in str(e).splitlines()]
    if errors:
        raise ValueError("\n".join(dict.fromkeys(errors)))
    out = []
    for point in itertools.product(*grid.values()):
        values = dict(zip(grid, point))
        try:
            config = config_from_record(MMR1Config, recorded, {**fixed, **values})
        except ValueError as e:
            said = ", ".join(f"{k}={v}" for k, v in values.items())
            errors += [f"replay --grid {said}: {line}" for line in str(e).splitlines()]
            continue
        same = all(getattr(config, k) == getattr(run, k) for k in grid)
        label = ", ".join(f"{k}={getattr(config, k)}" for k in grid) or "run"
        if label not in [v.label for v in out]:  # MMR1's aliases (kimikl = k2) name one variant once
            out.append(Variant(label, {k: getattr(config, k) for k in grid}, config, same))
    if errors:
        raise ValueError("\n".join(errors))
    if not any(v.is_run for v in out):
        out.insert(0, Variant("run", {k: getattr(run, k) for k in grid}, run, True))
    return out


def _logged(run_dir: Path, step: int) -> dict:
    """The `loss` and `grad_norm` metrics.jsonl recorded for `step` (raw lines, not a loader)."""
    from mmr1kit.runs import read_jsonl

    rows, _ = read_jsonl(run_dir / "metrics.jsonl")
    row = next((r for r in reversed(rows) if r.get("step") == step and "loss" in r), {})
    return {"logged_loss": row.get("loss", math.nan), "logged_grad_norm": row.get("grad_norm", math.nan)}


def replay(run_dir, step: int | None = None, grid: dict | None = None) -> ReplayResult:
    """Replay the capsule of `step` (default: the latest) of the run in `run_dir` under every grid point.

    Args:
        run_dir: A run folder trained with `capsule_every > 0`.
        step (`int`, *optional*): The optimizer step whose batch to replay.
        grid (`dict[str, list]`, *optional*): `OBJECTIVE_FIELDS` names -> values (strings are converted as a
            preset's are); the cartesian product is replayed, the run's own config included.

    Returns:
        `ReplayResult`.
    """
    run_dir = Path(run_dir)
    step = check_step(run_dir, step)
    with tempfile.TemporaryDirectory(prefix="mmr1kit-replay-") as workdir:
        points = variants(run_dir, grid, workdir)  # every value checked before any weights load
        lab = Lab(run_dir, step)
        run_lr = next(p.config.learning_rate for p in points if p.is_run)
        rows, frames, flats, weights = [], [], {}, {}
        for point in points:
            row, frame, flats[point.label], weights[point.label] = lab.variant(point, run_lr)
            rows.append(row)
            frames.append(frame)
    logged = _logged(run_dir, step)
    table = pd.DataFrame(rows)
    for key, value in logged.items():
        table[key] = [value if is_run else math.nan for is_run in table["is_run"]]
    labels = list(flats)
    stack = torch.stack([flats[k] for k in labels]).double()  # float32 sums over every weight lose 1e-5
    normed = stack / stack.norm(dim=1, keepdim=True).clamp(min=1e-30)
    cosine = pd.DataFrame((normed @ normed.T).numpy(), index=labels, columns=labels)
    return _result(lab, run_dir, step, table, cosine, pd.concat(frames, ignore_index=True), weights, logged)


def replayed_weights(run_dir, step: int, values: dict | None = None) -> dict[str, torch.Tensor]:
    """The policy's weights after step `step`'s optimizer update under the objective `values` (default: the run's
    own, whose result is the run's own weights after that step, i.e. `checkpoint-<step>`'s)."""
    run_dir = Path(run_dir)
    step = check_step(run_dir, step)
    with tempfile.TemporaryDirectory(prefix="mmr1kit-replay-") as workdir:
        points = variants(run_dir, {k: [v] for k, v in (values or {}).items()}, workdir)
        point = points[-1]  # the run's own config comes first when `values` differ from it
        run_lr = next(p.config.learning_rate for p in points if p.is_run)
        trainer = Lab(run_dir, step).stepped(point.config, point.config.learning_rate / run_lr)[0]
        return {k: v.detach().cpu() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def _result(lab: Lab, run_dir, step, table, cosine, completions, weights, logged) -> ReplayResult:
    from mmr1kit import kl
    from mmr1kit.models import load_processor

    record, batches, T, mask = lab.record, lab.batches, lab.T, lab.mask
    logps = torch.from_numpy(pad([b["logps"] for b in lab.before], T))
    ref = torch.from_numpy(pad([b["ref_per_token_logps"] for b in batches], T))
    estimators = {k: (v * mask).numpy() for k, v in kl.estimate_all(logps, ref).items()}
    estimators["exact"] = (torch.from_numpy(pad([b["exact"] for b in lab.before], T)) * mask).numpy()
    tokenizer = getattr(load_processor(record["model"]), "tokenizer", None)
    tokens = []
    for b in batches:
        for ids, m in zip(b["completion_ids"].tolist(), b["completion_mask"].tolist()):
            tokens.append([tokenizer.decode([t]) if tokenizer else str(t) for t, keep in zip(ids, m) if keep])
    rewards = torch.cat([b["capsule_rewards"] for b in batches]) if "capsule_rewards" in batches[0] else None
    weighted = torch.tensor(record["reward_weights"])
    total = (rewards * weighted).nansum(1).numpy() if rewards is not None else np.full(len(lab.advantages), np.nan)
    info = {k: record[k] for k in ("learning_rates", "temperature", "gradient_accumulation_steps", "num_processes",
                                   "model", "reward_funcs", "reward_weights", "bytes", "micro_batches")}
    return ReplayResult(run_dir=Path(run_dir), step=step, variants=table, cosine=cosine, completions=completions,
                        token_weights=weights, estimators=estimators, tokens=tokens, mask=mask.numpy(),
                        advantages=lab.advantages.float().numpy(), rewards=total, info={**info, **logged})


# --- command line ---------------------------------------------------------------------------------------------------

SHOWN = ("loss", "grad_norm", "update_norm", "dlogp_rewarded", "dlogp_unrewarded", "dentropy", "exact_kl_after")


def add_command(sub) -> None:
    """Register `mmr1kit replay RUN [--step N] [--grid NAME=V1,V2]... [--out DIR]`."""
    p = sub.add_parser("replay", help="recompute one step of a run under other objectives, on the step's own batch "
                                      "(a run trained with capsule_every > 0)")
    p.add_argument("run_dir", type=Path, help="the run folder")
    p.add_argument("--step", type=int, help="a step with a capsule (default: the latest)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help=f"values of one objective field (repeatable; every combination is replayed, the run's own "
                        f"config too): {', '.join(OBJECTIVE_FIELDS)}")
    p.add_argument("--out", type=Path, help="folder for replay.json (default: RUN/replays/step-N)")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args) -> int:
    result = replay(args.run_dir, args.step, parse_grid(args.grid))  # bad input: exit 2 before any weights load
    table = result.variants[list(SHOWN)].copy()
    names = [f"v{i + 1}" for i in range(len(table))]
    table.index = [f"{n} {label}{' (run)' if own else ''}"
                   for n, label, own in zip(names, result.variants["label"], result.variants["is_run"])]
    cosine = pd.DataFrame(result.cosine.to_numpy(), index=names, columns=names)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.6g}".format):
        print(f"step {result.step} of {result.run_dir} ({int(result.mask.shape[0])} completions)")
        print(table.to_string())
        print("gradient cosine similarity:")
        print(cosine.round(3).to_string())
    own = result.variants[result.variants["is_run"]].iloc[0]
    print(f"run's own config: loss {own['loss']:.9g} (logged {own['logged_loss']:.9g}), grad_norm "
          f"{own['grad_norm']:.9g} (logged {own['logged_grad_norm']:.9g})")
    out = result.save(args.out or Path(args.run_dir) / "replays" / f"step-{result.step}")
    print(out.parent)
    return 0
