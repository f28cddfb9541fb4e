"""Capsules: one generation batch of a run, kept with the weights and optimizer state its loss step used.

With `capsule_every=N > 0` a run saves, at every N-th optimizer step and at the last one, everything step `s`'s
loss read, so that `mmr1kit.replay` can recompute that step under other objectives on the very same tokens:

    <run_dir>/capsules/step-<s>/
      capsule.json           step, learning rate(s) of the step, temperature, model / reference paths, processor
                             bounds, reward names and weights, one entry per completion (prompt id, image paths,
                             where its rollout is in rollouts.jsonl), optimizer settings, file sizes
      batch.safetensors      every tensor `_compute_loss` read, per micro-batch `<i>.<key>`: prompt / completion ids
                             and masks, advantages, old / reference / sampling log-probs when present, the
                             multimodal inputs (pixel values, grids, token types: stored, not recomputed, each
                             distinct image once), the reference's hidden states when the loss's KL is the exact one;
                             plus `<i>.capsule_rewards`
                             `(B, n_funcs)` (every reward function's raw value) and the RNG state before the loss
      model.safetensors      the policy's weights BEFORE step s's optimizer update (after step s-1's)
      optimizer.safetensors  the optimizer state before the update (AdamW moments; settings in capsule.json)

Why the weights travel with the capsule: `checkpoint-s` holds the weights after step s's update, not the ones its
loss was computed with; `checkpoint-(s-1)` exists only when the save steps happen to line up, and
`save_total_limit` rotates checkpoints away. The capsule is written at `on_pre_optimizer_step`, when the weights and
the optimizer state are exactly those of the loss, and lives outside `checkpoints/`, so rotation never touches it.

Resume: a capsule of step s is replaced when a resumed run trains step s again, and `RunRecorder.truncate_after`
drops capsules of steps after the checkpoint a run resumes from (`drop_after`), with the rest of the dead process's
tail: every step has at most one capsule.

Multi-process runs: the main process saves its own share of the batch (`num_processes` in capsule.json); the logged
loss averages all processes, so only single-process capsules reproduce it. DeepSpeed and FSDP shard the weights or
the optimizer state: capsules are refused there, and for datasets with video rows (not supported yet).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model
from transformers import TrainerCallback

FORMAT = 1
FOLDER = "capsules"
TAGS = ("capsule_rewards", "capsule_row")  # keys `tag` adds to a generation batch; they ride along through TRL's
# shuffle and split, so each micro-batch row keeps its own rewards and its place in the step's rollouts.jsonl rows


def capsule_dir(run_dir, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step-{int(step)}"


def capsule_steps(run_dir) -> list[int]:
    """The steps that have a complete capsule in `run_dir`, ascending."""
    root = Path(run_dir) / FOLDER
    if not root.is_dir():
        return []
    steps = []
    for folder in root.iterdir():
        name = folder.name
        if name.startswith("step-") and name[5:].isdigit() and (folder / "capsule.json").is_file():
            steps.append(int(name[5:]))
    return sorted(steps)


def drop_after(run_dir, step: int) -> list[int]:
    """Remove the capsules of steps after `step` (and half-written ones); return the steps removed."""
    root = Path(run_dir) / FOLDER
    removed = [s for s in capsule_steps(run_dir) if s > step]
    for s in removed:
        shutil.rmtree(capsule_dir(run_dir, s))
    if root.is_dir():
        for folder in root.glob(".step-*"):
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def check(args, train_dataset, sharded: bool = False) -> None:
    """Refuse capsules where they cannot hold the step (before the trainer loads or records anything)."""
    every = getattr(args, "capsule_every", 0)
    if every and (sharded or args.deepspeed or args.fsdp):
        raise ValueError(f"MMR1Config.capsule_every={every}: capsules need the whole weights and optimizer state in "
                         f"one process; DeepSpeed / FSDP shard them: set capsule_every=0")
    if every and "video" in getattr(train_dataset, "column_names", []):
        raise ValueError(f"MMR1Config.capsule_every={every}: capsules do not hold video rows yet (their frames ride "
                         f"in the batch as per-row dicts); set capsule_every=0 for this dataset")


def attach(trainer):
    """The trainer's `CapsuleWriter` (and its callback) when the run records capsules, else None."""
    if not getattr(trainer.args, "capsule_every", 0) or trainer.recorder is None:
        return None
    check(trainer.args, trainer.train_dataset, trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled)
    writer = CapsuleWriter(trainer)
    trainer.add_callback(CapsuleCallback(writer))
    return writer


def tag(trainer, output: dict, rewards: torch.Tensor, rows: torch.Tensor, described: list[dict]) -> None:
    """Tag a training batch that is about to train (after `mmr1kit.signal` assembled it) for its capsule.

    Args:
        output (`dict`): This process's generation batch of `B` rows.
        rewards (`torch.Tensor` of shape `(B, n_funcs)`): Each row's raw reward of every function.
        rows (`torch.Tensor` of shape `(B,)`): Each row's index among its step's rows of `rollouts.jsonl`.
        described (`list[dict]`): The prompt id and media of each of the step's rows of `rollouts.jsonl`.
    """
    writer = getattr(trainer, "capsules", None)
    if writer is not None and trainer.model.training:
        writer.tag(output, rewards, rows, described)


def keep(trainer, inputs: dict) -> None:
    """Keep a training micro-batch as `_compute_loss` receives it when its optimizer step gets a capsule."""
    writer = getattr(trainer, "capsules", None)
    if writer is not None and trainer.model.training:
        writer.keep(inputs)


class CapsuleCallback(TrainerCallback):
    """Writes the pending capsule right before the optimizer step: weights and optimizer state are still the loss's."""

    def __init__(self, writer):
        self.writer = writer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.writer.write()


class CapsuleWriter:
    """Keeps the micro-batches of capsule steps and writes them with the weights and optimizer state (main process)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.every = int(trainer.args.capsule_every)
        self.run_dir = Path(trainer.args.run_dir)
        self._round = None  # the last generation round: {"step", "rows"}
        self._step, self._kept = None, []

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.trainer.state.max_steps

    def tag(self, output: dict, rewards: torch.Tensor, rows: torch.Tensor, described: list[dict]) -> None:
        device = output["completion_ids"].device
        output["capsule_rewards"] = rewards.float().to(device)
        output["capsule_row"] = rows.to(device)
        self._round = {"step": self.trainer.state.global_step + 1, "rows": described}

    def keep(self, inputs: dict) -> None:
        step = self.trainer.state.global_step + 1
        if not self.due(step):
            return
        if self._step != step:
            self._step, self._kept = step, []
        tensors, values = {}, {}
        args = self.trainer.args
        skip = () if args.use_kl and args.kl_approximator == "exact" else ("ref_hidden",)  # (B, T, H): kept only
        for key, value in inputs.items():  # when the loss itself reads it; replay recomputes it for the metric
            if key in skip:
                continue
            if torch.is_tensor(value):
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
            elif value is not None:
                values[key] = value  # e.g. num_images: a list of ints
        tensors["rng_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.trainer.accelerator.device.type == "cuda":
            tensors["rng_cuda"] = torch.cuda.get_rng_state(self.trainer.accelerator.device)
        self._kept.append({"tensors": tensors, "values": values})

    def write(self) -> Path | None:
        step = self.trainer.state.global_step + 1  # on_pre_optimizer_step: global_step is still the previous step
        if self._step != step or not self._kept:
            return None
        kept, self._step, self._kept = self._kept, None, []
        root = self.run_dir / FOLDER
        tmp = root / f".step-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        trainer = self.trainer
        batch = {f"{i}.{k}": v for i, mb in enumerate(kept) for k, v in pack_pixels(mb).items()}
        save_file(batch, tmp / "batch.safetensors")
        save_model(trainer.accelerator.unwrap_model(trainer.model), str(tmp / "model.safetensors"))
        optimizer = save_optimizer(trainer.optimizer, tmp / "optimizer.safetensors")
        record = {
            "format": FORMAT,
            "step": step,
            "micro_batches": len(kept),
            "values": [mb["values"] for mb in kept],
            "rows": self._rows(kept),
            "learning_rates": [group["lr"] for group in trainer.optimizer.param_groups],
            "temperature": float(trainer.temperature),
            "gradient_accumulation_steps": trainer.current_gradient_accumulation_steps,
            "num_processes": trainer.accelerator.num_processes,
            "model": trainer.accelerator.unwrap_model(trainer.model).config._name_or_path,
            "reference_model": (trainer.accelerator.unwrap_model(trainer.ref_model).config._name_or_path
                                if trainer.ref_model is not None else None),
            "min_pixels": trainer.args.min_pixels,
            "max_pixels": trainer.args.max_pixels,
            "reward_funcs": list(trainer.reward_func_names),
            "reward_weights": trainer.reward_weights.tolist(),  # reward_scale included, as the advantages saw them
            "optimizer": optimizer,
            "bytes": {name: (tmp / name).stat().st_size for name in
                      ("batch.safetensors", "model.safetensors", "optimizer.safetensors")},
        }
        (tmp / "capsule.json").write_text(json.dumps(record, indent=1, default=_plain))
        final = capsule_dir(self.run_dir, step)
        if final.exists():  # a resumed run trains this step again: its capsule replaces the dead process's
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def _rows(self, kept) -> list[list[dict]]:
        """Per micro-batch, per row: the prompt id, its media and the rollout's place in rollouts.jsonl."""
        out = []
        for mb in kept:
            index = mb["tensors"].get("capsule_row")
            rows = []
            for i in ([] if index is None else index.tolist()):
                described = (self._round or {}).get("rows")
                rows.append({"rollout_step": (self._round or {}).get("step"), "rollout_index": i,
                             **(described[i] if described else {})})
            out.append(rows)
        return out


def pack_pixels(mb: dict) -> dict:
    """A micro-batch's tensors with `pixel_values` stored once per distinct row: the G completions of a prompt share
    its image, so `pixel_values.rows` `(B,)` indexes `pixel_values.<j>`, the distinct per-row blocks (TRL's
    `split_pixel_values_by_grid` cuts them). Layouts it cannot cut per row are stored whole."""
    from trl.trainer.utils import split_pixel_values_by_grid

    tensors = dict(mb["tensors"])
    if "pixel_values" not in tensors or "num_images" not in mb["values"]:
        return tensors
    split = split_pixel_values_by_grid({**tensors, "num_images": mb["values"]["num_images"]})["pixel_values"]
    if not isinstance(split, list) or len(split) != len(mb["values"]["num_images"]):
        return tensors
    blocks, index = {}, []
    for row in split:
        key = (tuple(row.shape), row.numpy().tobytes())
        index.append(blocks.setdefault(key, len(blocks)))
    del tensors["pixel_values"]
    tensors["pixel_values.rows"] = torch.tensor(index)
    for j in blocks.values():
        tensors[f"pixel_values.{j}"] = split[index.index(j)].contiguous()
    return tensors


def unpack_pixels(batch: dict) -> dict:
    """Undo `pack_pixels`: `pixel_values` as the loss read it, rows concatenated in order."""
    if "pixel_values.rows" not in batch:
        return batch
    rows = batch.pop("pixel_values.rows").tolist()
    blocks = {int(k.rsplit(".", 1)[1]): batch.pop(k) for k in [k for k in batch if k.startswith("pixel_values.")]}
    batch["pixel_values"] = torch.cat([blocks[j] for j in rows])
    return batch


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def save_optimizer(optimizer, path) -> dict:
    """Write an optimizer's state tensors to `path` (safetensors); return its class and param groups (JSON-able)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, str(path))
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return {"class": type(inner).__name__, "param_groups": groups, "scalars": scalars}


def load_optimizer_state(folder, record: dict) -> dict:
    """The optimizer `state_dict` a capsule saved (for `optimizer.load_state_dict`)."""
    tensors = load_file(str(Path(folder) / "optimizer.safetensors"))
    state = {}
    for key, value in {**tensors, **record["optimizer"]["scalars"]}.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in record["optimizer"]["param_groups"]]
    return {"state": state, "param_groups": groups}


def read_capsule(run_dir, step: int) -> tuple[dict, list[dict]]:
    """`(capsule.json, micro-batches)`: each micro-batch a dict of the tensors and values `_compute_loss` read, plus
    `capsule_rewards` / `capsule_row` / `rng_cpu` (and `rng_cuda`) as saved."""
    folder = capsule_dir(run_dir, step)
    record = json.loads((folder / "capsule.json").read_text())
    flat = load_file(str(folder / "batch.safetensors"))
    batches = [dict(values) for values in record["values"]]
    for key, value in flat.items():
        index, name = key.split(".", 1)
        batches[int(index)][name] = value
    return record, [unpack_pixels(b) for b in batches]
