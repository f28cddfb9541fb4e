r"""Evaluation protocols as data: the prompt, answer extractor, decoding and metric a benchmark number was measured with.

A number is only comparable with another measured under the same protocol: a base VLM can score 30 points apart
under a direct-answer and a reasoning prompt (R1-V's README: Qwen2-VL-2B reaches 86% on SuperCLEVR when asked for the
result directly, 48% with its `<think>` prompt), and a strict extractor counts as wrong what a lenient one accepts.
A benchmark's data card names its protocol (`mmr1kit.protocol` in the front matter) and lists the published numbers
with their source and the protocol each was measured under (`mmr1kit.published`); `mmr1kit.evaluate.evaluate(...,
protocol=...)` runs a protocol by name, as a `Protocol`, or through a card.

| protocol             | prompt (system / user)                                   | extractor → matcher           | decoding                         | metric   | from |
|----------------------|----------------------------------------------------------|-------------------------------|----------------------------------|----------|------|
| `training`           | the dataset's own prompt (the run's templates)           | the task's parser (lenient)   | greedy, the caller's length      | task's   | mmr1kit |
| `training_sampled`   | the dataset's own prompt                                 | the task's parser (lenient)   | one sample at T 1, caller's length | task's | mmr1kit |
| `mmr1_counting`      | none / `{question} First output the thinking process ...` | `strict_integer` → `integer` | greedy, 256 new tokens           | accuracy | MMR1 `eval/evaluate_counting.py` |
| `mmr1_mathvista`     | R1V / MathVista `query`                                  | `final_answer` → `math`       | greedy, 2048, special tokens kept | accuracy | MMR1 `eval/evaluate_mathvista.py` |
| `mathverse_cot`      | none / MathVerse `query_cot`                             | `final_answer` → `math`       | greedy, 2048                     | accuracy | MathVerse README |
| `easyr1_geometry3k`  | none / problem + EasyR1's `math.jinja` instruction       | `boxed` → `math`              | T 0.6, top-p 0.95, 2048          | accuracy | EasyR1 `examples/config.yaml` |
| `mmr1_refcoco`       | none / `Output the bounding box of the {question} in the image.` | the grounding parser | greedy, 128, special tokens kept | acc@0.5  | MMR1 `dev_lkh` `eval/evaluate_refcoco.py` |

`PROMPTS` holds prompt variants for `mmr1kit.evaluate.evaluate_prompts`, which evaluates one protocol under several
prompts side by side: `training` (the dataset's prompt), `direct` (LLaVA's short-answer instruction) and `reasoning`
(R1V's `<think>` / `<answer>` system prompt).

Where mmr1kit differs from the protocol's source, the protocol's `notes` say so (MathVista's GPT-4o fallback
extraction is not run; MMR1's `temperature=0.01, top_k=1` sampling is greedy decoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from mmr1kit.data import templates

MMR1 = "https://github.com/linkangheng/MMR1/blob"


@dataclass(frozen=True)
class Decoding:
    """How completions are generated. `max_new_tokens=None` takes the caller's value (`evaluate(max_new_tokens=)`)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    skip_special_tokens: bool = True


@dataclass(frozen=True)
class Protocol:
    """One benchmark protocol.

    Args:
        name (`str`): Registry key.
        system_prompt (`str`, *optional*): Template key of `mmr1kit.data.templates.SYSTEM_PROMPTS` or a literal;
            `None` together with `question_template=None` keeps the dataset's prompt.
        question_template (`str`, *optional*): Key of `QUESTION_TEMPLATES` or a literal with `{question}` (filled
            with the row's `problem`).
        extractor (`str`): Key of `mmr1kit.extractors.EXTRACTORS`, or `"task"` for the task's own parser
            (`mmr1kit.evaluate_metrics.score_example`).
        matcher (`str`): Key of `mmr1kit.extractors.MATCHERS` (unused with `extractor="task"`).
        metric (`str`): The headline figure of `EvalResult.metrics` (e.g. `"accuracy"`, `"acc@0.5"`).
        decoding (`Decoding`): Sampling and length.
        source (`str`): Where the protocol is specified (file at a commit).
        notes (`str`): Where mmr1kit's run differs from the source.
    """

    name: str
    system_prompt: str | None = None
    question_template: str | None = None
    extractor: str = "task"
    matcher: str = "math"
    metric: str = "accuracy"
    decoding: Decoding = field(default_factory=Decoding)
    source: str = ""
    notes: str = ""

    @property
    def keeps_prompt(self) -> bool:
        """Whether the dataset's own prompt is used (no system prompt and no question template given)."""
        return self.system_prompt is None and self.question_template is None

    def with_prompt(self, system_prompt: str | None, question_template: str | None, name: str | None = None):
        """This protocol with another prompt (everything else kept), e.g. a `PROMPTS` variant."""
        return replace(self, name=name or self.name, system_prompt=system_prompt, question_template=question_template)

    def prompt_text(self) -> dict:
        """The resolved system prompt and question template (`None` where the dataset's prompt is kept)."""
        if self.keeps_prompt:
            return {"system_prompt": None, "question_template": None}
        return {"system_prompt": templates.resolve("system_prompt_template", self.system_prompt or "none"),
                "question_template": templates.resolve("question_template", self.question_template or "default")}


MMR1_COUNTING_QUESTION = ("{question} First output the thinking process in <think> </think> and final answer (number) "
                          "in <answer> </answer> tags.")
EASYR1_MATH_QUESTION = ("{question} You FIRST think about the reasoning process as an internal monologue and then "
                        "provide the final answer. The reasoning process MUST BE enclosed within <think> </think> "
                        "tags. The final answer MUST BE put in \\boxed{{}}.")

PROTOCOLS: dict[str, Protocol] = {
    "training": Protocol(
        name="training",
        source="mmr1kit.evaluate (the prompts the run trained with)",
        notes="Not a published protocol: the dataset's prompt and mmr1kit's lenient parser "
              "(mmr1kit.rewards.parsing.extract_answer falls back to the whole text). Comparable across checkpoints "
              "of one run, not with papers.",
    ),
    "training_sampled": Protocol(
        name="training_sampled",
        decoding=Decoding(do_sample=True, temperature=1.0),
        source="mmr1kit.evaluate",
        notes="The training prompt and parser with one sample at temperature 1 per example, as GRPO's rollouts "
              "decode, so it measures what the training reward sees. Two "
              "evaluations with different seeds differ by sampling noise alone.",
    ),
    "mmr1_counting": Protocol(
        name="mmr1_counting",
        system_prompt="none",
        question_template=MMR1_COUNTING_QUESTION,
        extractor="strict_integer",
        matcher="integer",
        decoding=Decoding(max_new_tokens=256),
        source=f"{MMR1}/a2f8a034998688c2b90cc16592f44578e02513cd/eval/evaluate_counting.py",
        notes="Identical to R1-V's src/eval/test_qwen2vl_counting_superclevr.py (same prompt, regex, 256 greedy "
              "tokens). MMR1's dev_lkh branch drops 'First' from the prompt and its weak extractor shadows the "
              "strict one (a bug, docs/mmr1.md known bug 12): not reproduced.",
    ),
    "mmr1_mathvista": Protocol(
        name="mmr1_mathvista",
        system_prompt="r1v",
        question_template="{question}",
        extractor="final_answer",
        matcher="math",
        decoding=Decoding(max_new_tokens=2048, skip_special_tokens=False),
        source=f"{MMR1}/a2f8a034998688c2b90cc16592f44578e02513cd/eval/evaluate_mathvista.py",
        notes="The user turn is MathVista's `query` (hint, question, choices). MMR1 samples with temperature 0.01, "
              "top_p 0.001, top_k 1 (greedy here) and sends answers its rules (eval/extract_calculate.py) cannot "
              "extract to GPT-4o; mmr1kit counts those as no_answer, so accuracy is a lower bound of MMR1's.",
    ),
    "mathverse_cot": Protocol(
        name="mathverse_cot",
        system_prompt="none",
        question_template="{question}",
        extractor="final_answer",
        matcher="math",
        decoding=Decoding(max_new_tokens=2048),
        source="https://github.com/ZrrSkywalker/MathVerse/blob/937b090/README.md (query_cot: the CoT input)",
        notes="The user turn is MathVerse's `query_cot`. The official scores extract and judge answers with GPT-4 "
              "(evaluation/extract_answer_s1.py, score_answer_s2.py); rule-based here, so not the leaderboard's "
              "number.",
    ),
    "easyr1_geometry3k": Protocol(
        name="easyr1_geometry3k",
        system_prompt="none",
        question_template=EASYR1_MATH_QUESTION,
        extractor="boxed",
        matcher="math",
        decoding=Decoding(do_sample=True, temperature=0.6, top_p=0.95, max_new_tokens=2048),
        source="https://github.com/hiyouga/EasyR1/blob/b44b311b669bf1fd1aa2fc36f2251482ba33cb16/examples/config.yaml "
               "(val_override_config; format_prompt examples/format_prompt/math.jinja)",
        notes="EasyR1 grades with mathruler's grade_answer; math_verify here. One sample per problem (n: 1).",
    ),
    "mmr1_refcoco": Protocol(
        name="mmr1_refcoco",
        system_prompt="none",
        question_template="qwenvl_rec",
        extractor="task",
        metric="acc@0.5",
        decoding=Decoding(max_new_tokens=128, skip_special_tokens=False),
        source=f"{MMR1}/d1e015ce194df146085d1c7f9f56c28980e5c9a2/eval/evaluate_refcoco.py",
        notes="Boxes are parsed by mmr1kit's grounding parser (Qwen2-VL box tokens in 0..1000, or plain lists in the "
              "row's box_convention), as MMR1 did for its two output forms.",
    ),
}

PROMPTS: dict[str, tuple[str | None, str | None]] = {
    "training": (None, None),
    "direct": ("none", "{question}\nAnswer the question using a single word or phrase."),
    "reasoning": ("r1v", "{question}"),
}


def protocol_names() -> str:
    return ", ".join(PROTOCOLS)


def get_protocol(protocol) -> Protocol:
    """A `Protocol` from a registry name, a `Protocol`, or a data card (`.md`) naming one; `None` is `training`.

    Raises:
        ValueError: An unknown name, or a card without a protocol; the message lists the protocols available.
    """
    if protocol is None:
        return PROTOCOLS["training"]
    if isinstance(protocol, Protocol):
        return protocol
    text = str(protocol)
    if text.endswith(".md"):
        return PROTOCOLS[card_protocol_name(text)]
    if text not in PROTOCOLS:
        raise ValueError(f"unknown protocol {text!r}; available protocols: {protocol_names()}")
    return PROTOCOLS[text]


def protocol_for(protocol: str, dataset: str) -> Protocol:
    """The protocol an evaluation runs: `protocol` when given (a name or a card), else the protocol the `dataset`
    card names, else `training` (a dataset that is no card, or a card that names none)."""
    if protocol:
        return get_protocol(protocol)
    if str(dataset).endswith(".md"):
        from mmr1kit.data import read_card

        name = (read_card(dataset).get("mmr1kit") or {}).get("protocol")
        if name:
            return get_protocol(name)
    return PROTOCOLS["training"]


def card_protocol_name(card) -> str:
    """The protocol a data card names (`mmr1kit.protocol`); `ValueError` listing the protocols when it names none."""
    from mmr1kit.data import read_card

    spec = read_card(card).get("mmr1kit") or {}
    name = spec.get("protocol")
    if not name:
        raise ValueError(f"{card} names no evaluation protocol (mmr1kit.protocol); available protocols: "
                         f"{protocol_names()}")
    if name not in PROTOCOLS:
        raise ValueError(f"{card}: mmr1kit.protocol = {name!r} is not a known protocol; available protocols: "
                         f"{protocol_names()}")
    return name


def published(card) -> list[dict]:
    """The published numbers a card lists (`mmr1kit.published`): `model`, `value` (a fraction), `metric`, `split`,
    `protocol` (the one it was measured under, a registry name or a description), `same_protocol` (whether that is
    the card's own protocol), `source` (a URL) and `note`."""
    from mmr1kit.data import read_card

    return list((read_card(card).get("mmr1kit") or {}).get("published") or [])


# --------------------------------------------------------------------------------------------------------------
# Prompts and scores under a protocol
# --------------------------------------------------------------------------------------------------------------


def render_prompt(row: dict, protocol: Protocol) -> list[dict]:
    """The row's prompt under `protocol`: its own (`keeps_prompt`), else the protocol's system prompt and question
    template applied to `problem`, with `<image>` / `<video>` placeholders structured as the loader does."""
    if protocol.keeps_prompt:
        return row["prompt"]
    from mmr1kit.data.loading import _messages
    from mmr1kit.data.media import _SPLIT, structured_prompt

    text = protocol.prompt_text()
    messages = _messages(text["system_prompt"], text["question_template"].format(question=row["problem"]))
    if row.get("video") is not None or _SPLIT.search(row["problem"]):
        images = row.get("image_paths") or [row.get("image_path")]
        messages = structured_prompt(messages, {"images": images, "video": row.get("video")})
    return messages


def score(protocol: Protocol, task: str, completion: str, row: dict) -> dict:
    """Score one completion under `protocol`: the record fields of `score_example` for `extractor="task"`, else
    `answer` (`""` when none was found), `answered`, `score`, `correct` (and `pred_count` / `abs_error` for
    counting)."""
    from mmr1kit.evaluate_metrics import score_example
    from mmr1kit.extractors import EXTRACTORS, MATCHERS, gold_answer
    from mmr1kit.rewards.parsing import parse_number

    if protocol.extractor == "task":
        return score_example(task, completion, row)
    answer = EXTRACTORS[protocol.extractor](completion, row)
    correct = answer is not None and MATCHERS[protocol.matcher](answer, row)
    out = {"answer": answer or "", "answered": answer is not None, "score": float(correct), "correct": correct}
    if task == "counting":
        pred, gold = (parse_number(answer) if answer else None), parse_number(gold_answer(row))
        out.update(pred_count=pred, abs_error=abs(pred - gold) if pred is not None and gold is not None else None)
    return out


def check_protocols() -> None:
    """Raise `ValueError` if a protocol names an unknown extractor, matcher or template (run by the tests)."""
    from mmr1kit.extractors import EXTRACTORS, MATCHERS

    for p in PROTOCOLS.values():
        if p.extractor != "task" and (p.extractor not in EXTRACTORS or p.matcher not in MATCHERS):
            raise ValueError(f"protocol {p.name}: extractor {p.extractor!r} / matcher {p.matcher!r} unknown")
        p.prompt_text()


def cards_with_protocols(folder) -> dict[str, str]:
    """`{card stem: protocol name}` for the cards in `folder` that name a protocol."""
    from mmr1kit.data import read_card

    out = {}
    for card in sorted(Path(folder).glob("*.md")):
        name = (read_card(card).get("mmr1kit") or {}).get("protocol")
        if name:
            out[card.stem] = name
    return out
