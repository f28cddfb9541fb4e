"""Evaluation protocols (`mmr1kit.protocols`): the registry, the cards that name them and cite published numbers, the
prompts they render (MMR1's counting prompt verbatim), their scoring, and `evaluate(protocol=...)` /
`evaluate_prompts` on the real tiny model.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mmr1kit.data import load_dataset, read_card
from mmr1kit.protocols import (
    PROMPTS,
    PROTOCOLS,
    Decoding,
    cards_with_protocols,
    check_protocols,
    get_protocol,
    published,
    render_prompt,
    score,
)

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "data_cards"
BENCHMARKS = ["superclevr_test200", "countbenchqa", "pixmo_count", "refcoco", "refcoco_plus", "refcocog", "textvqa",
              "coco_detection", "mathvista_testmini", "mathverse_vision_only", "geometry3k", "synthetic_counting"]


def test_registry_is_consistent():
    check_protocols()
    assert all(name == p.name for name, p in PROTOCOLS.items())
    assert PROTOCOLS["training"].keeps_prompt and not PROTOCOLS["mmr1_counting"].keeps_prompt


def test_every_benchmark_card_names_a_protocol_and_sources_its_numbers():
    named = cards_with_protocols(CARDS)
    assert set(BENCHMARKS) <= set(named) and set(named.values()) <= set(PROTOCOLS)
    cited = 0
    for card in BENCHMARKS:
        for entry in published(CARDS / f"{card}.md"):
            assert {"model", "value", "metric", "split", "protocol", "same_protocol", "source", "note"} <= set(entry)
            assert 0 < entry["value"] <= 1 and entry["source"].startswith("https://github.com/"), (card, entry)
            assert entry["same_protocol"] == (entry["protocol"] == named[card]), (card, entry)
            spec = read_card(CARDS / f"{card}.md")
            assert entry["split"] in spec["configs"][0]["data_files"][0]["split"] or entry["split"] in str(spec)
            cited += 1
    assert cited >= 8


def test_unknown_protocol_and_card_without_one_list_the_protocols(qwen_path, counting_dir):
    from mmr1kit.evaluate import evaluate

    for bad, start in (("mmr2_counting", "unknown protocol 'mmr2_counting'"),
                       (str(CARDS / "clevr_cogen_a_train.md"), f"{CARDS / 'clevr_cogen_a_train.md'} names no")):
        with pytest.raises(ValueError) as error:
            get_protocol(bad)
        message = str(error.value)
        assert message.startswith(start) and "\n" not in message
        assert message.endswith("available protocols: " + ", ".join(PROTOCOLS))
    data = load_dataset(counting_dir, "test").select(range(2))
    with pytest.raises(ValueError, match="available protocols: training, "):
        evaluate(qwen_path, data, protocol="mathvista")
    assert get_protocol(str(CARDS / "superclevr_test200.md")) is PROTOCOLS["mmr1_counting"]
    assert get_protocol(None) is PROTOCOLS["training"]


def test_mmr1_counting_renders_mmr1s_prompt():
    # MMR1 eval/evaluate_counting.py (main): QUESTION_TEMPLATE.format(Question=...) as the only, user, turn
    mmr1 = "{Question} First output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags."
    row = {"problem": "How many red circles are there?", "prompt": [{"role": "user", "content": "unused"}]}
    assert render_prompt(row, PROTOCOLS["mmr1_counting"]) == [
        {"role": "user", "content": mmr1.format(Question="How many red circles are there?")}]
    reasoning = PROTOCOLS["mmr1_counting"].with_prompt(*PROMPTS["reasoning"])
    system, user = render_prompt(row, reasoning)
    assert system["role"] == "system" and "<think> reasoning process here </think>" in system["content"]
    assert user["content"] == "How many red circles are there?"
    assert render_prompt(row, PROTOCOLS["training"]) is row["prompt"]


def test_placeholders_are_kept_where_the_problem_puts_the_image():
    row = {"problem": "<image>Find x.", "image_path": "d.png", "prompt": None}
    (user,) = render_prompt(row, PROTOCOLS["easyr1_geometry3k"])
    assert user["content"][0] == {"type": "image"}
    assert user["content"][1]["text"].startswith("Find x. You FIRST think")
    assert user["content"][1]["text"].endswith("The final answer MUST BE put in \\boxed{}.")


def test_scores_separate_no_answer_from_wrong():
    row = {"solution": "3"}
    strict = PROTOCOLS["mmr1_counting"]
    assert score(strict, "counting", "3", row) == {"answer": "", "answered": False, "score": 0.0, "correct": False,
                                                   "pred_count": None, "abs_error": None}
    assert score(strict, "counting", "<answer>4</answer>", row)["abs_error"] == 1
    assert score(PROTOCOLS["training"], "counting", "3", row)["correct"]  # the lenient parser reads a bare number
    mc = {"solution": "C", "choices": ["1", "2", "3"], "question_type": "multi_choice"}
    assert score(PROTOCOLS["mmr1_mathvista"], "math", "<answer>C</answer>", mc)["correct"]
    assert not score(PROTOCOLS["mmr1_mathvista"], "math", "<answer>A or C</answer>", mc)["answered"]


def test_evaluate_runs_the_protocols_prompt_extractor_and_decoding(qwen_path, counting_dir):
    from mmr1kit.evaluate import _load, evaluate, generate

    data = load_dataset(counting_dir, "test", question_template="counting").select(range(6))
    short = replace(PROTOCOLS["mmr1_counting"], decoding=Decoding(max_new_tokens=5))  # a random model never stops
    result = evaluate(qwen_path, data, "counting", protocol=short, batch_size=3)
    df = result.records
    assert set(df["protocol"]) == {"mmr1_counting"} and result.metrics["protocol"] == "mmr1_counting"
    model, processor = _load(qwen_path, None, None, None, None)
    direct = generate(model, processor, data, max_new_tokens=5, prompts=[render_prompt(r, short) for r in data])
    assert df["completion"].tolist() == [c[0] for c in direct]  # the protocol's prompt was generated from
    tokenizer = processor.tokenizer
    assert all(len(tokenizer(c, add_special_tokens=False)["input_ids"]) <= 5 for c in df["completion"])
    assert (df["answered"] == df["completion"].str.contains(r"<answer>\s*\d+\s*</answer>")).all()
    for key in ("accuracy_low", "accuracy_high", "no_answer_rate", "no_answer_rate_low"):
        assert key in result.metrics
    assert result.metrics["no_answer_rate"] == (df["outcome"] == "no_answer").mean()


def test_a_converted_benchmark_runs_through_its_card(qwen_path, tmp_path):
    from mmr1kit.data.converters import convert_mathvista
    from mmr1kit.evaluate import evaluate

    convert_mathvista(ROOT / "tests" / "fixtures" / "datasets" / "mathvista", tmp_path / "mv")
    card = tmp_path / "mathvista_testmini.md"
    card.write_text((CARDS / "mathvista_testmini.md").read_text().replace("data_dir: data/mathvista",
                                                                         f"data_dir: {tmp_path / 'mv'}"))
    data = load_dataset(card, "testmini")
    protocol = get_protocol(str(card))
    result = evaluate(qwen_path, data, "auto", protocol=replace(protocol, decoding=Decoding(max_new_tokens=4)))
    assert result.metrics["task"] == "math" and result.metrics["n"] == 5 and protocol.name == "mmr1_mathvista"
    first = result.records.set_index("id")
    assert first.loc["mathvista-1", "solution"] == "C" and first["outcome"].isin(["correct", "wrong", "no_answer"]).all()


def test_evaluate_prompts_puts_every_model_and_prompt_in_one_table(qwen_path, counting_dir):
    from mmr1kit.evaluate import evaluate_prompts

    data = load_dataset(counting_dir, "test", question_template="counting").select(range(4))
    records, table = evaluate_prompts({"tiny": qwen_path}, data, "counting", max_new_tokens=4)
    assert list(table.index) == [("tiny", "training"), ("tiny", "direct"), ("tiny", "reasoning")]
    assert (table["n"] == 4).all() and len(records) == 12 and set(records["prompt"]) == set(PROMPTS)
    custom = {"terse": ("none", "{question} Number only.")}
    _, table = evaluate_prompts({"tiny": qwen_path}, data, "counting", max_new_tokens=4, prompts=custom)
    assert list(table.index) == [("tiny", "terse")]
    with pytest.raises(ValueError, match="unknown prompt.*available: training, direct, reasoning"):
        evaluate_prompts({"tiny": qwen_path}, data, prompts=["terse"])
    assert json.loads(json.dumps(PROMPTS))  # prompts are plain data
