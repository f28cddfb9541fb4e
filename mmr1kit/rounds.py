"""A training generation round's record: what `MMR1Trainer._score_round` keeps of a round, and how it is written.

With `dynamic_sampling` a batch may take several rounds (tries), and which completions train is known only after the
last one, so a round is kept in memory (`round_record`) and the step's rounds are written when the batch is complete
(`record_rounds`, called by `mmr1kit.signal.DynamicSampling`): every completion to `rollouts.jsonl` (with `try` and
`trained`; one table for the step to the trackers that take tables, `mmr1kit.trackers`), every group to the prompt
ledger (`mmr1kit.ledger`). Only the main process writes; all of them keep the ledger in memory. `tag_capsule` gives
the batch that trains its capsule tags (`mmr1kit.capsules`), pointing at the rows of `rollouts.jsonl` they trained.
"""

import torch
from accelerate.utils import gather_object

from mmr1kit import capsules
from mmr1kit.data.media import rollout_media

RECORDED = ("id", "image_path", "problem", "solution")  # always gathered (rollouts.jsonl); other columns if scalar
SKIP = ("prompt", "image", "images")  # the conversation and the pixels are never gathered
MEDIA = ("image", "images", "video")  # `rollout_media`'s keys: every image of a row, or its video


def _kept(key, value) -> bool:
    return key in RECORDED or (key not in SKIP and (value is None or isinstance(value, (str, bool, int, float))))


def round_record(trainer, inputs: list[dict], output: dict, rewards_per_func: torch.Tensor,
                 advantages: torch.Tensor, penalty: torch.Tensor | None, attempt: int) -> dict:
    """Gather what `record_rounds` writes about a round, all processes, in TRL's order.

    Args:
        trainer (`MMR1Trainer`): The trainer.
        inputs (`list[dict]`): This process's dataset rows of the round.
        output (`dict`): This process's generation batch.
        rewards_per_func (`torch.Tensor` of shape `(N, n_funcs)`): The round's rewards.
        advantages (`torch.Tensor` of shape `(N,)`): What the loss uses.
        penalty (`torch.Tensor` of shape `(N,)`, *optional*): `beta * KL` per completion (`kl_in_reward`).
        attempt (`int`): The try (0 without `dynamic_sampling="replace"`).
    """
    lengths = output["completion_mask"].sum(1)
    last = output["completion_ids"].gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    truncated = ~torch.isin(last, torch.tensor(trainer.eos_token_ids, device=last.device))
    # the data columns (for the ledger) and where the row's media are (every image path, or the video)
    gathered = gather_object([({k: v for k, v in x.items() if _kept(k, v)}, rollout_media(x)) for x in inputs])
    return {"rows": [columns for columns, _ in gathered], "media": [media for _, media in gathered],
            "rewards": rewards_per_func, "advantages": advantages,
            "lengths": gather_object(lengths.tolist()), "truncated": gather_object(truncated.tolist()),
            "penalty": penalty, "values": trainer.signal.values(rewards_per_func), "attempt": attempt,
            "completions": list(trainer._logs["completion"]), "temperature": trainer.temperature}


def record_rounds(trainer, rounds: list[dict], trained: list[torch.Tensor]) -> None:
    """Write a step's rounds: ledger visits and rollouts; `trained[k]` `(N_k,)` marks round `k`'s completions that
    train. Timed as `timing/record` where a record is written (a process without one spends nothing on it)."""
    step = trainer.state.global_step + 1  # the optimizer step these completions train
    G = trainer.num_generations
    with trainer.phases.phase("record", trainer.model.training and trainer.recorder is not None):
        records, first_group = [], 0  # groups are numbered on across the tries of a step
        for round_, rows_trained in zip(rounds, trained):
            trainer.ledger.visit(step, round_["attempt"], round_["rows"], round_["values"], round_["rewards"],
                                 trainer.reward_func_names, rows_trained.view(-1, G).any(1), G)
            if trainer.recorder is not None:
                records += rollout_rows(trainer, round_, rows_trained, step, first_group)
            first_group += len(round_["rows"]) // G
        if trainer.recorder is not None:
            trainer.recorder.log_rollouts(records)
            trainer.rollout_tables.log(records)  # every tracker_rollouts_every steps, to the trackers that take tables


def rollout_rows(trainer, round_: dict, trained: torch.Tensor, step: int, first_group: int = 0) -> list[dict]:
    """One `rollouts.jsonl` row per completion of a round (fields: `docs/metrics.md`)."""
    rows, rewards_per_func, advantages = round_["rows"], round_["rewards"], round_["advantages"]
    completions, penalty, G = round_["completions"], round_["penalty"], trainer.num_generations
    weights = trainer.reward_weights.cpu()
    records = []
    for i, (row, media) in enumerate(zip(rows, round_["media"])):
        text = completions[i][0]["content"] if isinstance(completions[i], list) else completions[i]
        rewards = {f"rewards/{n}": float(rewards_per_func[i, j]) for j, n in enumerate(trainer.reward_func_names)}
        records.append(
            {
                "step": step,
                "prompt_id": row.get("id"),
                "group": first_group + i // G,
                **{k: media[k] for k in MEDIA if k in media},  # every image / the video
                "problem": row.get("problem"),
                "solution": row.get("solution"),
                "completion": text,
                **rewards,
                "reward": float((rewards_per_func[i] * weights).nansum()),
                "advantage": float(advantages[i]),
                "length": int(round_["lengths"][i]),
                "truncated": bool(round_["truncated"][i]),
                "temperature": round_["temperature"],
                "try": round_["attempt"],
                "trained": bool(trained[i]),
                **({"kl_penalty": float(penalty[i])} if penalty is not None else {}),
            }
        )
    return records


def tag_capsule(trainer, batch: dict, rounds: list[dict], trained: list[torch.Tensor], rank: int,
                n_local: int) -> None:
    """Tag the batch that trains (this process's trained rows, in try order, as `mmr1kit.signal` merged them) for
    `mmr1kit.capsules`: each row's raw rewards and its index among its step's rows of `rollouts.jsonl` (all tries,
    all processes, in the order `record_rounds` wrote them)."""
    if getattr(trainer, "capsules", None) is None or not trainer.model.training:
        return
    index, rewards, described, offset = [], [], [], 0
    for round_, rows_trained in zip(rounds, trained):
        local = torch.nonzero(rows_trained[rank * n_local:(rank + 1) * n_local]).flatten() + rank * n_local
        index.append(local + offset)
        rewards.append(round_["rewards"][local])
        described += [{"prompt_id": row.get("id"), **media} for row, media in zip(round_["rows"], round_["media"])]
        offset += len(round_["rows"])
    capsules.tag(trainer, batch, torch.cat(rewards), torch.cat(index), described)
