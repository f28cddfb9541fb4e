"""The prompt ledger (`mmr1kit.ledger`): the raw `prompts.jsonl` lines, the state rebuilt on resume, the fates of
prompts, the figure, and the config check of an online order resuming a run without a ledger."""

import json

import pandas as pd
import pytest
import torch

from mmr1kit import ledger, plots
from mmr1kit.config import MMR1Config

IDS = ["a", "b", "c", "d"]


def _rows(ids, G=2):
    return [{"id": i, "count": 3, "problem": f"how many in {i}?", "solution": "3", "objects": [1, 2]}
            for i in ids for _ in range(G)]


def test_visits_are_written_as_raw_lines_and_restored_up_to_a_step(tmp_path):
    path = tmp_path / "prompts.jsonl"
    book = ledger.PromptLedger(IDS, path)
    nan = float("nan")
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [nan, nan], [nan, nan]])  # prompt b: nothing scorable
    book.visit(1, 0, _rows(["a", "b"]), rewards[:, 0], rewards, ["accuracy", "format"], torch.tensor([True, False]), 2)
    book.visit(2, 1, _rows(["a", "c"]), torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.ones(4, 2) * 0.5,
               ["accuracy", "format"], torch.tensor([False, True]), 2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["step"], x["try"], x["prompt_id"], x["index"], x["pass_rate"], x["kept"]) for x in lines] == [
        (1, 0, "a", 0, 0.5, True), (1, 0, "b", 1, None, False), (2, 1, "a", 0, 1.0, False), (2, 1, "c", 2, 0.0, True)]
    assert lines[0]["rewards"] == {"accuracy": 0.5, "format": 1.0} and lines[1]["rewards"]["accuracy"] is None
    assert lines[0]["columns"] == {"id": "a", "count": 3, "problem": "how many in a?", "solution": "3"}  # scalars
    assert "columns" not in lines[2] and "columns" in lines[3]  # the data columns once per prompt
    assert book.pass_rates(4) == [1.0, None, 0.0, None]  # latest visit; b was seen but unscored
    fresh = ledger.PromptLedger(IDS)
    fresh.restore(lines, up_to_step=1)  # a resume from checkpoint 1 forgets step 2
    assert fresh.pass_rates(4) == [0.5, None, None, None] and fresh.indexes_of(["c", "zz", "a"]) == [2, 0]
    with pytest.raises(ValueError, match="unique ids"):
        ledger.PromptLedger(["a", "a"])


def _visits():
    # (prompt, [(step, pass rate), ...], count)
    table = {"solved": ([(1, 0.75), (5, 1.0)], 1), "learned": ([(1, 0.0), (3, 0.25), (6, 0.75)], 2),
             "forgotten": ([(2, 1.0), (7, 0.25)], 2), "never": ([(2, 0.0), (4, 0.25)], 3), "once": ([(3, 0.5)], 3),
             "once_wrong": ([(4, 0.0)], 1)}
    return pd.DataFrame([{"step": s, "try": 0, "prompt_id": p, "index": i, "pass_rate": r, "kept": True, "n": 4,
                          "rewards/accuracy": r, "count": c, "problem": f"q {p}"}
                         for i, (p, (visits, c)) in enumerate(table.items()) for s, r in visits])


def test_fates_from_the_first_and_last_visit():
    fates = ledger.prompt_fates(_visits(), threshold=0.5).set_index("prompt_id")
    assert fates["fate"].to_dict() == {"solved": "solved from the start", "learned": "learned",
                                       "forgotten": "forgotten", "never": "never learned",
                                       "once": "solved from the start", "once_wrong": "never learned"}
    assert fates.loc["learned", "history"] == [(1, 0.0), (3, 0.25), (6, 0.75)]
    assert fates.loc["learned", "visits"] == 3 and fates.loc["forgotten", "best_pass"] == 1.0
    table = ledger.fate_table(fates.reset_index(), "count")
    assert table.loc[1].tolist() == [1, 0, 0, 1] and table.loc[2].tolist() == [0, 1, 1, 0]
    assert table.loc[3].tolist() == [1, 0, 0, 1] and list(table.columns) == list(ledger.FATES)
    assert ledger.default_breakdown(fates.reset_index()) == "count"
    with pytest.raises(ValueError, match="by='colour'.*count"):
        ledger.fate_table(fates.reset_index(), "colour")
    examples = ledger.fate_examples(fates.reset_index(), n=1)
    assert examples["fate"].tolist() == list(ledger.FATES)  # one per fate, in FATES order
    assert examples.loc[examples["fate"] == "learned", "pass_rate_at_step"].item() == "0.00@1 → 0.25@3 → 0.75@6"


def test_read_ledger_and_the_figure(tmp_path):
    book = ledger.PromptLedger(IDS, tmp_path / ledger.FILE)
    for step, rate in ((1, 0.0), (2, 0.5), (3, 1.0)):
        values = torch.tensor([rate, rate, 1.0, 1.0])
        book.visit(step, 0, _rows(["a", "b"]), values, values.unsqueeze(1), ["accuracy"], torch.ones(2, dtype=bool), 2)
    visits = ledger.read_ledger(tmp_path)
    assert len(visits) == 6 and {"rewards/accuracy", "count", "problem"} <= set(visits.columns)
    assert visits["count"].tolist() == [3] * 6  # the data columns of a prompt on all its visits
    fates = ledger.prompt_fates(visits)
    assert fates.set_index("prompt_id")["fate"].to_dict() == {"a": "learned", "b": "solved from the start"}
    fig = plots.plot_prompt_fates(fates, "count")
    left, right = fig.axes
    heights = {c.get_label().split(" (")[0]: [r.get_height() for r in c] for c in left.containers}
    assert heights["learned"] == [1] and heights["solved from the start"] == [1] and heights["forgotten"] == [0]
    assert len(right.get_lines()) == 2  # one line per prompt visited twice or more
    fig.savefig(tmp_path / "ledger.png")
    assert (tmp_path / "ledger.png").read_bytes()[:4] == b"\x89PNG"
    assert ledger.read_ledger(tmp_path / "nothing").empty
    empty = plots.plot_prompt_fates(ledger.prompt_fates(ledger.read_ledger(tmp_path / "nothing")))
    assert "no prompt ledger" in empty.axes[0].texts[0].get_text()


def test_online_order_cannot_resume_a_run_without_a_ledger(tmp_path):
    run = tmp_path / "old"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ValueError) as info:
        MMR1Config(run_dir=str(run), order_dataset="online", resume_from_checkpoint="true")
    assert str(info.value).startswith("MMR1Config.order_dataset='online'") and "prompts.jsonl" in str(info.value)
    assert "\n" not in str(info.value)
    MMR1Config(run_dir=str(run), order_dataset="random", resume_from_checkpoint="true")  # other orders resume
    MMR1Config(run_dir=str(tmp_path / "new"), order_dataset="online", resume_from_checkpoint="auto")  # a fresh start
    (run / ledger.FILE).write_text("")
    MMR1Config(run_dir=str(run), order_dataset="online", resume_from_checkpoint="true")
