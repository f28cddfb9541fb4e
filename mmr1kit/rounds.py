"""A training generation round's record: what `MMR1Trainer._score_round` keeps of a round, and how it is written.

With `dynamic_sampling` a batch may take several rounds (tries), and which completions train is known only after the
last one, so a round is kept in memory (`round_record`) and written when the batch is complete (`record_round`, called
by `mmr1kit.signal.DynamicSampling`): every completion to `rollouts.jsonl` (with `try` and `trained`), every group
to the prompt ledger (`mmr1kit.ledger`). Only the main process writes; all of them keep the ledger in memory.
"""

import time

import torch
from accelerate.utils import gather_object

RECORDED = ("id", "image_path", "problem", "solution")  # always gathered (rollouts.jsonl); other columns if scalar
SKIP = ("prompt", "image", "images")  # the conversation and the pixels are never gathered


def _kept(key, value) -> bool:
    return key in RECORDED or (key not in SKIP and (value is None or isinstance(value, (str, bool, int, float))))


def round_record(trainer, inputs: list[dict], output: dict, rewards_per_func: torch.Tensor,
                 advantages: torch.Tensor, penalty: torch.Tensor | None, attempt: int) -> dict:
    """Gather what `record_round` writes about a round, all processes, in TRL's order.

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
    columns = [{k: v for k, v in x.items() if _kept(k, v)} for x in inputs]
    return {"rows": gather_object(columns), "rewards": rewards_per_func, "advantages": advantages,
            "lengths": gather_object(lengths.tolist()), "truncated": gather_object(truncated.tolist()),
            "penalty": penalty, "values": trainer.signal.values(rewards_per_func), "attempt": attempt,
            "completions": list(trainer._logs["completion"]), "temperature": trainer.temperature}


def record_round(trainer, round_: dict, trained: torch.Tensor) -> None:
    """Write a round's ledger visits and rollouts; `trained` `(N,)` marks the completions that train."""
    t0 = time.perf_counter()
    step = trainer.state.global_step + 1  # the optimizer step these completions train
    G = trainer.num_generations
    trainer.ledger.visit(step, round_["attempt"], round_["rows"], round_["values"], round_["rewards"],
                         trainer.reward_func_names, trained.view(-1, G).any(1), G)
    if trainer.recorder is not None:
        trainer.recorder.log_rollouts(rollout_rows(trainer, round_, trained, step))
    trainer._time("record", t0)


def rollout_rows(trainer, round_: dict, trained: torch.Tensor, step: int) -> list[dict]:
    """One `rollouts.jsonl` row per completion (fields: `docs/metrics.md`)."""
    rows, rewards_per_func, advantages = round_["rows"], round_["rewards"], round_["advantages"]
    completions, penalty, G = round_["completions"], round_["penalty"], trainer.num_generations
    weights = trainer.reward_weights.cpu()
    first_group = round_["attempt"] * (len(rows) // G)  # groups are numbered on across the tries of a step
    records = []
    for i, row in enumerate(rows):
        text = completions[i][0]["content"] if isinstance(completions[i], list) else completions[i]
        rewards = {f"rewards/{n}": float(rewards_per_func[i, j]) for j, n in enumerate(trainer.reward_func_names)}
        records.append(
            {
                "step": step,
                "prompt_id": row.get("id"),
                "group": first_group + i // G,
                "image": row.get("image_path"),
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
