"""What one objective does to one capsule: a real `MMR1Trainer` with the capsule's weights, its own loss and
backward on the capsule's micro-batches, the run's optimizer step, and the policy measured before and after.

`mmr1kit.replay` runs this once per grid point (`Lab.variant`); the trainer is built per variant and dropped after
it, so one variant's policy and reference are in memory at a time, plus the reference kept for the measurements and
the flat gradients the cosine matrix needs (on the CPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmr1kit.capsules import capsule_dir, load_optimizer_state, read_capsule

# Multimodal inputs of TRL's `_get_per_token_logps_and_entropies` (as `GRPOTrainer._compute_loss` passes them).
FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
                "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def build_trainer(record: dict, config, problems: list[str]):
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
    """Run the trainer's loss on every micro-batch as training does (`compute_loss`, which calls `_compute_loss`
    inside the mixins' hooks); return loss, grad norm, flat gradient, weights."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    seen = _logp_probe(trainer)
    total = 0.0
    for batch in batches:
        _restore_rng(batch)
        loss = trainer.compute_loss(model, batch)
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


def pad(arrays: list[torch.Tensor], T: int) -> np.ndarray:
    """Concatenate `(B_i, T_i)` micro-batch arrays to `(N, T)`, zero-padded on the right."""
    return torch.cat([torch.nn.functional.pad(a.float().cpu(), (0, T - a.size(1))) for a in arrays]).numpy()


def one_step_effect(before, after, mask, advantages) -> dict:
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


class Lab:
    """One capsule on this machine: its batches, the reference, and what every variant shares (the state before)."""

    def __init__(self, run_dir: Path, step: int):
        self.record, batches = read_capsule(run_dir, step)
        self.record["folder"] = capsule_dir(run_dir, step)
        self.record["use_vllm"] = bool(json.loads((run_dir / "config.json").read_text()).get("use_vllm"))
        self.batches = batches
        self.problems = [r.get("prompt_id") or "" for rows in self.record["rows"] for r in rows]
        self.T = max(b["completion_ids"].size(1) for b in batches)
        self.mask = torch.from_numpy(pad([b["completion_mask"] for b in batches], self.T))
        self.advantages = torch.cat([b["advantages"].reshape(b["advantages"].size(0), -1)[:, 0] for b in batches])
        self.reference, self.ref_cache, self.before = None, {}, None

    def stepped(self, config, lr_scale: float):
        """A trainer for `config` after its loss, backward and optimizer step: `(trainer, inputs, loss, grad norm,
        flat gradient (P,), per-token weights (N, T), learning rates)`."""
        trainer = build_trainer(self.record, config, self.problems)
        device = trainer.accelerator.device
        if self.reference is None:  # the run's reference (kept from the first trainer that has one)
            from mmr1kit.models import load_policy

            self.reference = trainer.ref_model
            if self.reference is None:
                dtype = next(trainer.model.parameters()).dtype
                path = self.record["reference_model"] or self.record["model"]
                self.reference = load_policy(path, dtype=dtype).to(device).eval()
            for batch in self.batches:  # capsules of beta=0 runs: the reference's log-probs from its hidden states
                if "ref_per_token_logps" not in batch:
                    with torch.no_grad():
                        hidden, head = trainer._completion_hidden(self.reference, _on(batch, device))
                        logps = _reference_logps(hidden, head, batch["completion_ids"].to(device), trainer.temperature)
                    batch["ref_per_token_logps"] = logps.cpu()
        inputs = [_on(b, device) for b in self.batches]
        if self.before is None:
            self.before = _measure(trainer, self.reference, inputs, self.ref_cache)
        loss, norm, flat, weights = _loss_and_gradient(trainer, inputs)
        lrs = _optimizer_step(trainer, self.record, lr_scale)
        return trainer, inputs, loss, norm, flat, pad(weights, self.T), lrs

    def variant(self, point, run_lr: float):
        """The table row, the per-completion frame, the flat gradient and the per-token weights of one variant."""
        trainer, inputs, loss, norm, flat, weights, lrs = self.stepped(point.config,
                                                                        point.config.learning_rate / run_lr)
        after = _measure(trainer, self.reference, inputs, self.ref_cache)
        whole = {when: {k: torch.from_numpy(pad([x[k] for x in items], self.T)) for k in items[0]}
                 for when, items in (("before", self.before), ("after", after))}
        stats, dlogp = one_step_effect(whole["before"], whole["after"], self.mask, self.advantages)
        row = {"label": point.label, **point.values, "is_run": point.is_run,
               "loss": loss, "grad_norm": norm, "learning_rate": lrs[0], "update_norm": self.update_norm(trainer),
               **stats}
        w = torch.from_numpy(weights)
        frame = pd.DataFrame({"label": point.label, "completion": range(len(self.advantages)),
                              "length": self.mask.sum(1).numpy(), "advantage": self.advantages.numpy(),
                              "weight_sum": w.sum(1).numpy(), "weight_abs_sum": w.abs().sum(1).numpy(),
                              "dlogp": dlogp.numpy()})
        return row, frame, flat, weights

    def update_norm(self, trainer) -> float:
        """`||theta_after - theta_before||` over every weight the capsule saved."""
        from safetensors.torch import load_file

        saved = load_file(str(self.record["folder"] / "model.safetensors"))
        now = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        return math.sqrt(sum(float((now[k].float().cpu() - v.float()).pow(2).sum()) for k, v in saved.items()))
