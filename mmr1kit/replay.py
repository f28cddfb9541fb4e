"""The objective lab: replay one captured generation batch (`mmr1kit.capsules`) under other objectives.

    mmr1kit replay RUN --step N --grid kl_approximator=k1,k2,k3,exact --grid loss_type=grpo,dapo,dr_grpo
    replay(run, step, {"kl_approximator": ["k1", "k2"]})

Training once per objective compares objectives through different batches: sampling noise hides the difference.
Here the batch is held fixed. For each variant (a point of the grid's cartesian product, the run's own config
included) a real `MMR1Trainer` is built with the variant's `MMR1Config`, the capsule's weights are loaded (the
weights BEFORE step N's optimizer update, those the step's loss was computed with), and its own `_compute_loss` runs
on the capsule's micro-batches, so replay cannot drift from training. For each variant it reports:

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
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmr1kit.capsules import capsule_dir, capsule_steps, load_optimizer_state, read_capsule

# MMR1Config fields that only change how the loss and the optimizer step treat a fixed batch.
OBJECTIVE_FIELDS = (
    "loss_type", "beta", "use_kl", "kl_approximator", "use_bias_correction_kl", "entropy_reg", "entropy_weight",
    "epsilon", "epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile",
    "off_policy_mask_threshold", "entropy_coef", "use_adaptive_entropy", "sapo_temperature_pos",
    "sapo_temperature_neg", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg",
    "vllm_importance_sampling_correction", "learning_rate", "max_grad_norm", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon",
)
# Multimodal inputs of TRL's `_get_per_token_logps_and_entropies` (as `GRPOTrainer._compute_loss` passes them).
FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
                "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


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
    workdir = str(workdir or tempfile.mkdtemp(prefix="mmr1kit-replay-"))
    # replay never samples, writes no record and starts no engine
    fixed = {"run_dir": workdir, "output_dir": workdir, "report_to": "none", "resume_from_checkpoint": None,
             "overwrite_run_dir": False, "allow_changes": [], "use_vllm": False, "push_to_hub": False}
    run = config_from_record(MMR1Config, recorded, fixed)
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
        out.append(Variant(", ".join(f"{k}={getattr(config, k)}" for k in grid) or "run", values, config, same))
    if errors:
        raise ValueError("\n".join(errors))
    if not any(v.is_run for v in out):
        out.insert(0, Variant("run", {}, run, True))
    return out


# --- per-variant computation --------------------------------------------------------------------------------------


def _trainer(record: dict, config, problems: list[str]):
    """A real `MMR1Trainer` for `config`, no record, with the capsule's weights."""
    from datasets import Dataset
    from safetensors.torch import load_model

    from mmr1kit.trainer import MMR1Trainer

    # TRL requires a training set; replay never samples from it (its rows are the capsule's questions).
    rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": p or ""}] for p in problems]})
    trainer = MMR1Trainer(model=record["model"], args=config, train_dataset=rows, record=False)
    load_model(trainer.accelerator.unwrap_model(trainer.model), str(record["folder"] / "model.safetensors"))
    trainer.use_vllm = record.get("use_vllm", False)  # the run's vLLM importance ratio is in the batch
    trainer.state.global_step = record["step"] - 1
    trainer.current_gradient_accumulation_steps = record["gradient_accumulation_steps"]
    trainer.set_temperature(record["temperature"])
    trainer.model.train()
    return trainer


def _logp_probe(trainer) -> list:
    """Retain the gradient of the loss's own per-token log-probs `(B, T)` (the policy pass, with entropies)."""
    seen = []
    original = trainer._get_per_token_logps_and_entropies

    def probe(*args, compute_entropy=False, **kwargs):
        out = original(*args, compute_entropy=compute_entropy, **kwargs)
        if compute_entropy and out[0].requires_grad:
            out[0].retain_grad()
            seen.append(out[0])
        return out

    trainer._get_per_token_logps_and_entropies = probe
    return seen


def _restore_rng(batch: dict) -> None:
    torch.set_rng_state(batch["rng_cpu"])
    if "rng_cuda" in batch and torch.cuda.is_available():
        torch.cuda.set_rng_state(batch["rng_cuda"])


def _on(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) and not k.startswith("rng_") else v) for k, v in batch.items()}


def _loss_and_gradient(trainer, batches):
    """Run the trainer's `_compute_loss` on every micro-batch; return loss, grad norm, flat gradient, weights."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    seen = _logp_probe(trainer)
    total = 0.0
    for batch in batches:
        _restore_rng(batch)
        loss = trainer._compute_loss(model, batch)
        loss.backward()
        total += loss.detach().item()
    del trainer._get_per_token_logps_and_entropies  # the class's method again
    weights = [(t.grad if t.grad is not None else torch.zeros_like(t)).detach() * b["completion_mask"]
               for t, b in zip(seen, batches)]
    params = list(model.parameters())
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float().cpu()
                      for p in params])
    max_norm = trainer.args.max_grad_norm if trainer.args.max_grad_norm > 0 else float("inf")
    norm = trainer.accelerator.clip_grad_norm_(params, max_norm)  # as Trainer._clip_grad_norm: the pre-clip norm
    return total, float(norm), flat, weights


def _optimizer_step(trainer, record: dict, lr_scale: float) -> list[float]:
    """One step of the run's optimizer from its state before step N, with the variant's settings."""
    optimizer = trainer.create_optimizer()
    if type(optimizer).__name__ != record["optimizer"]["class"]:
        raise ValueError(f"replay: the variant's optimizer is {type(optimizer).__name__}, the run's was "
                         f"{record['optimizer']['class']}")
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(load_optimizer_state(record["folder"], record))
    lrs = [lr * lr_scale for lr in record["learning_rates"]]
    for group, settings, lr in zip(optimizer.param_groups, fresh, lrs):
        group.update(settings)  # the variant's betas / eps / weight decay; the moments stay the run's
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lrs


@torch.no_grad()
def _measure(trainer, reference, batches, ref_cache: dict) -> list[dict]:
    """Per micro-batch `(B, T)` log-probs, entropies and exact KL to `reference`, at the trainer's current weights."""
    from mmr1kit import kl

    out = []
    for i, batch in enumerate(batches):
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        T = batch["completion_ids"].size(1)
        forward = {k: batch.get(k) for k in FORWARD_KEYS}
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, T, compute_entropy=True, **forward)
        trainer._policy_pass = None
        if i not in ref_cache:
            ref_cache[i] = trainer._completion_hidden(reference, batch)
        hidden, head = trainer._completion_hidden(trainer.model, batch)
        ref_hidden, ref_head = ref_cache[i]
        exact, _ = kl.exact_from_hidden(hidden, head, ref_hidden, ref_head, temperature=trainer.temperature)
        out.append({"logps": logps, "entropy": entropies, "exact": exact})
    return out


def _reference_logps(ref_hidden, ref_head, ids, temperature) -> torch.Tensor:
    """`(B, T)` reference log-probs of the sampled tokens from its hidden states (capsules of beta=0 runs lack them)."""
    logits = torch.nn.functional.linear(ref_hidden.float(), ref_head.float()) / temperature
    return logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _pad(arrays: list[torch.Tensor], T: int) -> np.ndarray:
    """Concatenate `(B_i, T_i)` micro-batch arrays to `(N, T)`, zero-padded on the right."""
    return torch.cat([torch.nn.functional.pad(a.float().cpu(), (0, T - a.size(1))) for a in arrays]).numpy()


def _stats(before, after, mask, advantages) -> dict:
    """The one-step effect: mean per-token log-prob change of rewarded / unrewarded completions, entropy, exact KL."""
    n = mask.sum(1).clip(min=1)
    dlogp = ((after["logps"] - before["logps"]) * mask).sum(1) / n
    pos, neg = advantages > 0, advantages < 0
    total = mask.sum().clip(min=1)
    return {
        "dlogp_rewarded": float(dlogp[pos].mean()) if pos.any() else math.nan,
        "dlogp_unrewarded": float(dlogp[neg].mean()) if neg.any() else math.nan,
        "dentropy": float(((after["entropy"] - before["entropy"]) * mask).sum() / total),
        "exact_kl_before": float((before["exact"] * mask).sum() / total),
        "exact_kl_after": float((after["exact"] * mask).sum() / total),
    }, dlogp


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
        record, batches = read_capsule(run_dir, step)
        record["folder"] = capsule_dir(run_dir, step)
        record["use_vllm"] = bool(json.loads((run_dir / "config.json").read_text()).get("use_vllm"))
        return _replay(run_dir, step, record, batches, points)


def _replay(run_dir, step, record, batches, points) -> ReplayResult:
    from mmr1kit.trainer import MMR1Trainer  # noqa: F401  (import cost paid once, before the first variant)

    problems = [r.get("prompt_id") or "" for rows in record["rows"] for r in rows]
    run_lr = next(p.config.learning_rate for p in points if p.is_run)
    rows, flats, weights_by, ref_cache, before, reference = [], {}, {}, {}, None, None
    T = max(b["completion_ids"].size(1) for b in batches)
    mask_t = torch.cat([torch.nn.functional.pad(b["completion_mask"].float(), (0, T - b["completion_ids"].size(1)))
                        for b in batches])
    advantages = torch.cat([b["advantages"].reshape(b["advantages"].size(0), -1)[:, 0] for b in batches]).float()
    per_completion = []
    for point in points:
        trainer = _trainer(record, point.config, problems)
        device = trainer.accelerator.device
        if reference is None:  # the run's reference (kept from the first trainer that has one)
            from mmr1kit.models import load_policy

            reference = trainer.ref_model
            if reference is None:
                dtype = next(trainer.model.parameters()).dtype
                reference = load_policy(record["reference_model"] or record["model"], dtype=dtype).to(device).eval()
        inputs = [_on(b, device) for b in batches]
        for i, batch in enumerate(inputs):  # capsules of beta=0 runs: the reference's log-probs from its states
            if "ref_per_token_logps" not in batch and trainer.beta != 0:
                hidden, head = trainer._completion_hidden(reference, batch)
                batch["ref_per_token_logps"] = _reference_logps(hidden, head, batch["completion_ids"],
                                                                trainer.temperature).detach()
        if before is None:
            before = _measure(trainer, reference, inputs, ref_cache)
        loss, norm, flats[point.label], weights = _loss_and_gradient(trainer, inputs)
        weights_by[point.label] = _pad(weights, T)
        lrs = _optimizer_step(trainer, record, point.config.learning_rate / run_lr)
        after = _measure(trainer, reference, inputs, ref_cache)
        cat = lambda items, key: torch.from_numpy(_pad([x[key] for x in items], T))  # noqa: E731
        stats, dlogp = _stats({k: cat(before, k) for k in before[0]}, {k: cat(after, k) for k in after[0]},
                              mask_t, advantages)
        rows.append({"label": point.label, **{k: str(v) for k, v in point.values.items()}, "is_run": point.is_run,
                     "loss": loss, "grad_norm": norm, "learning_rate": lrs[0], **stats})
        w = torch.from_numpy(weights_by[point.label])
        per_completion.append(pd.DataFrame({"label": point.label, "completion": range(len(advantages)),
                                            "length": mask_t.sum(1).numpy(), "advantage": advantages.numpy(),
                                            "weight_sum": w.sum(1).numpy(), "weight_abs_sum": w.abs().sum(1).numpy(),
                                            "dlogp": dlogp.numpy()}))
        del trainer
    logged = _logged(Path(run_dir), step)
    table = pd.DataFrame(rows)
    for key, value in logged.items():
        table[key] = [value if is_run else math.nan for is_run in table["is_run"]]
    labels = list(flats)
    stack = torch.stack([flats[k] for k in labels])
    normed = stack / stack.norm(dim=1, keepdim=True).clamp(min=1e-30)
    cosine = pd.DataFrame((normed @ normed.T).numpy(), index=labels, columns=labels)
    return _result(run_dir, step, record, batches, table, cosine, per_completion, weights_by, before, mask_t,
                   advantages, logged, T)


def _result(run_dir, step, record, batches, table, cosine, per_completion, weights_by, before, mask_t, advantages,
            logged, T) -> ReplayResult:
    from mmr1kit import kl
    from mmr1kit.models import load_processor

    logps = torch.from_numpy(_pad([b["logps"] for b in before], T))
    if all("ref_per_token_logps" in b for b in batches):
        ref = torch.from_numpy(_pad([b["ref_per_token_logps"] for b in batches], T))
        estimators = {k: (v * mask_t).numpy() for k, v in kl.estimate_all(logps, ref).items()}
    else:
        estimators = {}
    estimators["exact"] = (torch.from_numpy(_pad([b["exact"] for b in before], T)) * mask_t).numpy()
    tokenizer = getattr(load_processor(record["model"]), "tokenizer", None)
    tokens = []
    for b in batches:
        for ids, m in zip(b["completion_ids"].tolist(), b["completion_mask"].tolist()):
            tokens.append([tokenizer.decode([t]) if tokenizer else str(t) for t, keep in zip(ids, m) if keep])
    weights = torch.tensor(record["reward_weights"])
    rewards = torch.cat([b["capsule_rewards"] for b in batches]) if "capsule_rewards" in batches[0] else None
    total = (rewards * weights).nansum(1).numpy() if rewards is not None else np.full(len(advantages), np.nan)
    info = {k: record[k] for k in ("learning_rates", "temperature", "gradient_accumulation_steps", "num_processes",
                                   "model", "reward_funcs", "reward_weights", "bytes", "micro_batches")}
    return ReplayResult(run_dir=Path(run_dir), step=step, variants=table, cosine=cosine,
                        completions=pd.concat(per_completion, ignore_index=True), token_weights=weights_by,
                        estimators=estimators, tokens=tokens, mask=mask_t.numpy(), advantages=advantages.numpy(),
                        rewards=total, info={**info, **logged})
