r"""The prompt ledger: every visit of every training prompt, in `prompts.jsonl` of the run folder.

A visit is one prompt's group of `G` completions in one generation round (a try, with `dynamic_sampling`). Each
visit is one JSON line, appended as it happens (whole lines, flushed, like `metrics.jsonl`):

    {"step": 3, "try": 0, "prompt_id": "000165", "index": 12, "pass_rate": 0.25, "kept": true, "n": 8,
     "rewards": {"accuracy": 0.25, "answer_format": 1.0}, "columns": {"count": 3, "solution": "3", ...}}

- `step`: the optimizer step the completions were generated for (as in `rollouts.jsonl`); `index`: the row of the
  training set; `prompt_id`: its `id`.
- `pass_rate`: the group's mean of `filter_key` (default: the first reward function, the task's accuracy); `null`
  when no completion could be scored.
- `kept`: whether the group trained (`dynamic_sampling` may drop it); `rewards`: each reward function's group mean.
- `columns`: the prompt's data columns (JSON scalars: id, problem, solution, count, difficulty, ...), on the prompt's
  first visit in the run only.

On resume the ledger is rebuilt from the file: lines after the checkpoint's step are dropped (the records of a dead
process, as for the other records), the main process reads the file and sends it to the others. `order_dataset:
online` draws from the ledger's latest pass rate of each prompt (`mmr1kit.data.ordering.draw_prompts`).

Analysis (the curves notebook): `read_ledger` gives the visits, `prompt_fates` sorts prompts into solved from the
start, learned, never learned and forgotten, `fate_table` counts them by a data column, `fate_examples` shows a few.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from mmr1kit.runs import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)

FILE = "prompts.jsonl"
FATES = ("solved from the start", "learned", "forgotten", "never learned")
SKIP_COLUMNS = ("prompt", "image", "images")  # the conversation and the pixels are not data columns


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


class PromptLedger:
    """The ledger of one run, in memory on every process; the main process also appends it to `path`.

    Args:
        ids (`list[str]`): The training set's `id` column (row `i` has id `ids[i]`).
        path (`Path`, *optional*): `prompts.jsonl` of the run folder; `None` on the other processes.
    """

    def __init__(self, ids: list[str], path: Path | None = None):
        self.index = {str(i): n for n, i in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ValueError("the prompt ledger needs unique ids in the training set's `id` column")
        self.path = Path(path) if path is not None else None
        self.latest: dict[int, float | None] = {}  # row index -> pass rate of its latest visit

    def indexes_of(self, ids) -> list[int]:
        """Row indexes of prompt ids (unknown ids are left out)."""
        return [self.index[str(i)] for i in ids if str(i) in self.index]

    def pass_rates(self, n: int) -> list[float | None]:
        """Latest pass rate of rows `0 .. n - 1`; `None` for a row never visited."""
        return [self.latest.get(i) for i in range(n)] if self.latest else [None] * n

    def visit(self, step: int, attempt: int, rows: list[dict], values, rewards_per_func, names: list[str],
              kept, num_generations: int) -> None:
        """Record one generation round's groups.

        Args:
            step (`int`): The optimizer step the completions train (`global_step + 1`).
            attempt (`int`): The try (0 without `dynamic_sampling="replace"`).
            rows (`list[dict]`): The round's dataset rows, all processes, one per completion (TRL's order).
            values (`torch.Tensor` of shape `(N,)`): `filter_key` per completion.
            rewards_per_func (`torch.Tensor` of shape `(N, n_funcs)`): Every reward function's reward.
            names (`list[str]`): The reward functions' names.
            kept (`torch.Tensor` of shape `(N / G,)`, bool): Whether each group trained.
            num_generations (`int`): `G`.
        """
        G = num_generations
        pass_rates = values.view(-1, G).float().nanmean(1).tolist()
        means = rewards_per_func.view(-1, G, rewards_per_func.size(1)).float().nanmean(1).tolist()
        lines = []
        for g, rate in enumerate(pass_rates):
            row = rows[g * G]
            prompt_id = row.get("id")
            index = self.index.get(str(prompt_id))
            rate = None if math.isnan(rate) else rate
            line = {"step": step, "try": attempt, "prompt_id": prompt_id, "index": index, "pass_rate": rate,
                    "kept": bool(kept[g]), "n": G,
                    "rewards": {n: (None if math.isnan(v) else v) for n, v in zip(names, means[g])}}
            if index is not None and index not in self.latest:
                line["columns"] = {k: v for k, v in row.items() if k not in SKIP_COLUMNS and _scalar(v)}
            if index is not None:
                self.latest[index] = rate
            lines.append(line)
        if self.path is not None:
            append_jsonl(self.path, lines)

    def restore(self, lines: list[dict], up_to_step: int) -> None:
        """Rebuild the in-memory state from `prompts.jsonl` lines, keeping visits up to `up_to_step`."""
        self.latest = {}
        for line in lines:
            if line.get("step", 0) <= up_to_step and line.get("index") is not None:
                self.latest[int(line["index"])] = line.get("pass_rate")


def make_ledger(trainer, dataset) -> PromptLedger:
    """The trainer's ledger: written to the run folder by the main process when it records. Without an `id` column
    in the training set (or with a streaming dataset) the ledger stays empty and the manifest says so;
    `order_dataset="online"` then fails."""
    columns = getattr(dataset, "column_names", None) or []  # an IterableDataset may not know its columns
    ids = list(dataset["id"]) if "id" in columns and hasattr(dataset, "__len__") else None
    recorder = trainer.recorder
    if ids is None:
        if trainer.args.order_dataset == "online":
            raise ValueError("MMR1Config.order_dataset='online': the training set has no `id` column to key the "
                             "prompt ledger (mmr1kit.data.load_dataset always adds one)")
        if recorder is not None:
            recorder.update_manifest(prompt_ledger="off: the training set has no `id` column")
        return PromptLedger([], None)
    return PromptLedger(ids, recorder.path / FILE if recorder is not None else None)


class LedgerCallback(TrainerCallback):
    """Rebuilds the ledger when training begins: empty on a fresh run (an old `prompts.jsonl` in the folder is
    removed), from the file up to the checkpoint's step on a resumed one. The main process reads the file and
    broadcasts it, so the other processes (other nodes) need not see the run folder."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        from accelerate.utils import broadcast_object_list

        ledger, step = self.trainer.ledger, state.global_step
        lines = []
        if ledger.path is not None:
            if step == 0:
                ledger.path.unlink(missing_ok=True)
            else:
                lines, _ = read_jsonl(ledger.path)
        if self.trainer.accelerator.num_processes > 1:
            lines = broadcast_object_list([lines], from_process=0)[0]
        ledger.restore(lines, step)
        if step and not lines and args.order_dataset == "online" and ledger.path is not None:
            logger.warning("order_dataset='online' resumes at step %d with an empty prompt ledger %s", step,
                           ledger.path)


def resume_error(config) -> tuple[str, str] | None:
    """`(field, message)` when `order_dataset="online"` resumes a run folder with checkpoints but no ledger."""
    value = config.resume_from_checkpoint
    if config.order_dataset != "online" or value in (None, False) or str(value).lower() in ("", "false", "no", "0"):
        return None
    checkpoints = Path(config.output_dir or Path(config.run_dir) / "checkpoints")
    explicit = Path(str(value)).is_dir()
    has_checkpoint = explicit or (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")))
    if has_checkpoint and not (Path(config.run_dir) / FILE).exists():
        return "order_dataset", (f"'online' resumes from the prompt ledger {Path(config.run_dir) / FILE}, which this "
                                 f"run folder does not have (a run from before the ledger existed); resume it with "
                                 f"another order, or start a new run")
    return None


# --- analysis ----------------------------------------------------------------------------------------------------

def read_ledger(run_dir) -> pd.DataFrame:
    """The visits of a run's `prompts.jsonl`, one row each, with the prompt's data columns on every row.

    Columns: `step, try, prompt_id, index, pass_rate, kept, n`, one `rewards/<func>` per reward function, then the
    data columns (from each prompt's first visit). Empty when the run has no ledger.
    """
    lines, _ = read_jsonl(Path(run_dir) / FILE)
    if not lines:
        return pd.DataFrame(columns=["step", "try", "prompt_id", "index", "pass_rate", "kept", "n"])
    columns = {}
    for line in lines:
        if "columns" in line:
            columns.setdefault(line["prompt_id"], line["columns"])
    visits = pd.DataFrame([{k: v for k, v in line.items() if k not in ("columns", "rewards")} for line in lines])
    rewards = pd.DataFrame([line.get("rewards") or {} for line in lines]).add_prefix("rewards/")
    data = pd.DataFrame([columns.get(pid, {}) for pid in visits["prompt_id"]])
    data = data.drop(columns=[c for c in data.columns if c in visits.columns or c in rewards.columns])
    return pd.concat([visits, rewards, data], axis=1)


def prompt_fates(visits: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per prompt: its visits and its fate over the run.

    A visit counts as solved when its pass rate is at least `threshold`. The fate compares the first and the last
    visit: `solved from the start` (both solved), `learned` (last solved, first not), `forgotten` (last not solved, an
    earlier one was), `never learned` (none solved). A prompt seen once is solved from the start or never learned.

    Returns:
        `pd.DataFrame` with `prompt_id, visits, first_step, last_step, first_pass, last_pass, best_pass, history, fate`
        (`history`: the `(step, pass_rate)` of every visit, in order) and the prompt's data columns.
    """
    fixed = {"step", "try", "prompt_id", "index", "pass_rate", "kept", "n"}
    data_cols = [c for c in visits.columns if c not in fixed and not str(c).startswith("rewards/")]
    rows = []
    for prompt_id, v in visits.dropna(subset=["pass_rate"]).sort_values(["step", "try"]).groupby("prompt_id",
                                                                                                  sort=False):
        rates = v["pass_rate"].astype(float).tolist()
        solved = [r >= threshold for r in rates]
        if solved[-1]:
            fate = FATES[0] if solved[0] else FATES[1]
        else:
            fate = FATES[2] if any(solved) else FATES[3]
        rows.append({"prompt_id": prompt_id, "visits": len(rates), "first_step": int(v["step"].iloc[0]),
                     "last_step": int(v["step"].iloc[-1]), "first_pass": rates[0], "last_pass": rates[-1],
                     "best_pass": max(rates), "history": list(zip(v["step"].astype(int).tolist(), rates)),
                     "fate": fate, **{c: v[c].iloc[0] for c in data_cols}})
    columns = ["prompt_id", "visits", "first_step", "last_step", "first_pass", "last_pass", "best_pass", "history",
               "fate", *data_cols]
    return pd.DataFrame(rows, columns=columns)


def fate_table(fates: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Prompts per fate (columns, in `FATES` order), one row per value of the data column `by` (or one row "all")."""
    if by is not None and by not in fates.columns:
        data = [c for c in fates.columns if c not in ("prompt_id", "visits", "first_step", "last_step", "first_pass",
                                                       "last_pass", "best_pass", "history", "fate")]
        raise ValueError(f"by={by!r} is not a data column of this ledger; its data columns: {data}")
    keys = fates[by] if by is not None else pd.Series("all", index=fates.index, name="all")
    table = pd.crosstab(keys, fates["fate"]).reindex(columns=list(FATES), fill_value=0)
    table.columns.name = "fate"
    return table


def default_breakdown(fates: pd.DataFrame, preferred=("count", "task")) -> str | None:
    """The first of `preferred` that is a data column of the ledger with more than one value, else `None`."""
    for column in preferred:
        if column in fates.columns and fates[column].nunique() > 1:
            return column
    return None


def fate_examples(fates: pd.DataFrame, n: int = 3, columns=("problem", "solution")) -> pd.DataFrame:
    """Up to `n` prompts per fate (most visited first), with their data `columns` and pass-rate history."""
    shown = [c for c in columns if c in fates.columns]
    picked = (fates.sort_values(["visits", "prompt_id"], ascending=[False, True])
              .groupby("fate", sort=False).head(n))
    order = {fate: i for i, fate in enumerate(FATES)}
    picked = picked.assign(_o=picked["fate"].map(order)).sort_values(["_o", "visits"], ascending=[True, False])
    history = picked["history"].map(lambda h: " → ".join(f"{r:.2f}@{s}" for s, r in h))
    return picked[["fate", "prompt_id", *shown, "visits"]].assign(pass_rate_at_step=history).reset_index(drop=True)
