"""The registry of tiny model families that `mmr1kit.models.build_tiny_vlm` can build offline, keyed by `model_type`.

It is used for **building only**: training, evaluation and the input checks look at a loaded model's config and
processor (`mmr1kit.media.capabilities`), never at this table or at a model's name, so a hub checkpoint of a family
that is not listed here goes through the same code.

Each entry names the builder, the special tokens its tokenizer needs (added after the locally trained BPE vocabulary;
`named` ones also become tokenizer attributes such as `tokenizer.boi_token`, which some processors read) and its
end-of-turn token. The README's "Model families" table says what is tested for each.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from mmr1kit.families import llava, qwen, siglip

BASE_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class Family:
    """A buildable tiny family: `build(tokenizer, seed, size) -> (model, processor)` and its tokenizer's needs."""

    model_type: str
    build: Callable
    tokens: list[str]
    named: dict = field(default_factory=dict)
    eos: str = "<|im_end|>"
    bos: str | None = None

    @property
    def special_tokens(self) -> list[str]:
        """Every special token of the family's tokenizer, in vocabulary order."""
        return list(dict.fromkeys([*BASE_TOKENS, *self.tokens, *self.named.values()]))


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in [
        Family("qwen2_5_vl", qwen.build_qwen2_5_vl, [*qwen.QWEN_TOKENS, *llava.LLAVA_TOKENS]),
        Family("qwen2_vl", qwen.build_qwen2_vl, qwen.QWEN_TOKENS),
        Family("qwen3_vl", qwen.build_qwen3_vl, qwen.QWEN_TOKENS),
        Family("llava", llava.build_llava, [*qwen.QWEN_TOKENS, *llava.LLAVA_TOKENS]),
        Family("gemma3", siglip.build_gemma3, siglip.GEMMA3_TOKENS, siglip.GEMMA3_NAMED, eos="<end_of_turn>",
               bos="<bos>"),
        Family("idefics3", siglip.build_idefics3, siglip.IDEFICS3_TOKENS, eos="<end_of_utterance>"),
        Family("smolvlm", siglip.build_smolvlm, siglip.IDEFICS3_TOKENS, eos="<end_of_utterance>"),
        Family("internvl", llava.build_internvl, llava.INTERNVL_TOKENS, llava.INTERNVL_NAMED),
    ]
}


def family(model_type: str) -> Family:
    """The registry entry of `model_type`; raises `ValueError` listing the buildable families."""
    if model_type not in FAMILIES:
        raise ValueError(f"arch={model_type!r} is not a buildable tiny family; valid: {sorted(FAMILIES)}")
    return FAMILIES[model_type]
