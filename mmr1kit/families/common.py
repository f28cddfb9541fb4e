"""Pieces every tiny-family builder shares: the text-model sizes, token ids, generation config and chat templates.

A builder gets the locally trained tokenizer (`mmr1kit.models.build_tokenizer`, with the family's special tokens)
and the size dict (`mmr1kit.models.DEFAULT_SIZE` plus overrides) and returns `(model, processor)` built from the
stock transformers classes, so `AutoModelForImageTextToText` / `AutoProcessor` reload them like a hub checkpoint.
"""

import torch

# ChatML turns (Qwen, LLaVA in mmr1kit, InternVL): an image part renders as `image`, a video part as `video`.
CHATML_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}@IMAGE@"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}@VIDEO@"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml(image: str, video: str = "") -> str:
    """The ChatML chat template with an image part rendered as `image` and a video part as `video`."""
    return CHATML_TEMPLATE.replace("@IMAGE@", image).replace("@VIDEO@", video)


def token_ids(tok, tokens) -> dict[str, int]:
    """`{token: id}`; raises when a token is not a single id of `tok` (a builder forgot to add it)."""
    ids = {t: tok.convert_tokens_to_ids(t) for t in tokens}
    missing = [t for t, i in ids.items() if i is None or i == tok.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks the special token(s) {missing}")
    return ids


def vocab_size(tok) -> int:
    """The tokenizer's length rounded up to a multiple of 64, as hub checkpoints pad their embedding tables."""
    return -(-len(tok) // 64) * 64


def text_dims(tok, size: dict, eos: str, pad: str, bos: str | None = None) -> dict:
    """Keyword arguments shared by the decoder configs (Qwen2, Llama, Gemma 3): sizes, special ids, init range."""
    ids = token_ids(tok, [t for t in (eos, pad, bos) if t])
    return dict(
        vocab_size=vocab_size(tok),
        hidden_size=size["hidden_size"],
        intermediate_size=2 * size["hidden_size"],
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=size["num_attention_heads"],
        num_key_value_heads=size["num_key_value_heads"],
        max_position_embeddings=2048,
        bos_token_id=ids[bos or pad],
        eos_token_id=ids[eos],
        pad_token_id=ids[pad],
        initializer_range=size["initializer_range"],
    )


def vision_side(size: dict, patch: int) -> int:
    """The square input side of fixed-resolution vision towers (CLIP, SigLIP): `sqrt(max_pixels)` floored to `patch`."""
    return int(size["max_pixels"] ** 0.5) // patch * patch


def finish(model_class, config, tok, seed: int, eos: list[str], pad: str):
    """Instantiate `model_class(config)` under `seed`, with sampling on and every end-of-turn token as EOS."""
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model = model_class(config)
    ids = token_ids(tok, [*eos, pad])
    model.generation_config = GenerationConfig(eos_token_id=[ids[t] for t in eos], pad_token_id=ids[pad],
                                               do_sample=True)
    return model
