"""Load vision-language policies, and build the tiny offline models that are mmr1kit's embedded default.

`build_tiny_vlm` writes a real Hugging Face checkpoint folder: a byte-level BPE tokenizer trained locally (Qwen2's
pre-tokenizer, the Qwen-VL special tokens and chat template), the stock processor of the architecture, and random
weights. `AutoProcessor.from_pretrained` / `AutoModelForImageTextToText.from_pretrained` load it like any hub model,
so the rest of mmr1kit never branches on "tiny" or on a model's name.

Two architectures are built: `"qwen2_5_vl"` (the default policy, as in MMR1's Qwen2.5-VL runs) and `"llava"`
(MMR1's quick start trained LLaVA-1.5), used by the tests to show that one code path serves both.
"""

import hashlib
import json
import os
from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<image>",  # LLaVA's image placeholder
]

# The official Qwen2-VL chat template (an image part renders as <|vision_start|><|image_pad|><|vision_end|>).
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA renders an image part as "<image>"; ChatML turns keep one tokenizer for both architectures.
LLAVA_CHAT_TEMPLATE = QWEN_CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")

ARCHITECTURES = ("qwen2_5_vl", "llava")

# Size "S" of ../shared/research/learning-feasibility.md: 0.7M parameters, learns the counting task in minutes.
# initializer_range 0.1, not HF's 0.02: at 0.02 a tiny VLM trained from scratch ignores the image.
DEFAULT_SIZE = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vision_hidden_size=64,
    vision_depth=2,
    vision_heads=2,
    initializer_range=0.1,
    min_pixels=56 * 56,
    max_pixels=112 * 112,
)


def _corpus() -> list[str]:
    """Sentences that cover the prompts, answers and boxes of mmr1kit's tasks, for training the BPE tokenizer."""
    from mmr1kit.data.templates import QUESTION_TEMPLATES, SYSTEM_PROMPTS

    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray"]
    shapes = ["circle", "circles", "square", "squares", "triangle", "triangles", "object", "objects"]
    lines = list(SYSTEM_PROMPTS.values()) + [t.format(question="How many?") for t in QUESTION_TEMPLATES.values()]
    for c in colours:
        for s in shapes:
            lines.append(f"How many {c} {s} are there? Answer as <answer>N</answer>.")
            lines.append(f"Output the bounding box of the {c} {s} left of the {c} {s} as [x1, y1, x2, y2].")
    for n in range(0, 1001, 7):
        lines.append(f"<think>I see {n} objects.</think><answer>{n}</answer> [{n}, {n + 3}, {n + 17}, {n + 29}]")
        lines.append(f'{{"bbox_2d": [{n}, {n // 2}, {n + 11}, {n + 5}], "label": "red circle"}} ({n},{n}),({n},{n})')
    lines.append("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}<>/\\-+=*_")
    lines += ["zero one two three four five six seven eight nine ten eleven twelve", "What text is written?"]
    return lines * 3


def build_tokenizer(vocab_size: int = 1024):
    """Train a byte-level BPE with Qwen2's pre-tokenizer and wrap it as a `Qwen2Tokenizer` (no download).

    Byte-level BPE covers all 256 bytes, so no input ever maps to an unknown token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    n_bpe = len(vocab)
    for i, t in enumerate(SPECIAL_TOKENS):
        vocab[t] = n_bpe + i
    hf_tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL_TOKENS[1:],
    )
    hf_tok.padding_side = "left"
    return hf_tok


def _qwen_model(tok, seed: int, size: dict):
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
        Qwen2VLVideoProcessor,
    )

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden, heads = size["hidden_size"], size["num_attention_heads"]
    half = hidden // heads // 2  # mrope_section (temporal, height, width) must sum to head_dim / 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    text = dict(
        vocab_size=-(-len(tok) // 64) * 64,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=size["num_key_value_heads"],
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        initializer_range=size["initializer_range"],
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=size["vision_depth"],
        hidden_size=size["vision_hidden_size"],
        intermediate_size=2 * size["vision_hidden_size"],
        num_heads=size["vision_heads"],
        out_hidden_size=hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[size["vision_depth"] - 1],
        initializer_range=size["initializer_range"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        initializer_range=size["initializer_range"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": size["min_pixels"], "longest_edge": size["max_pixels"]},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=ids["<|endoftext|>"], do_sample=True)
    return model, processor


def _llava_model(tok, seed: int, size: dict):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden = size["hidden_size"]
    side = int(size["max_pixels"] ** 0.5) // 14 * 14  # CLIP takes a fixed square input
    text = Qwen2Config(
        vocab_size=-(-len(tok) // 64) * 64,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=size["num_attention_heads"],
        num_key_value_heads=size["num_key_value_heads"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        initializer_range=size["initializer_range"],
    )
    vision = CLIPVisionConfig(
        hidden_size=size["vision_hidden_size"],
        intermediate_size=2 * size["vision_hidden_size"],
        num_hidden_layers=size["vision_depth"],
        num_attention_heads=size["vision_heads"],
        image_size=side,
        patch_size=14,
        initializer_range=size["initializer_range"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        initializer_range=size["initializer_range"],
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=ids["<|endoftext|>"], do_sample=True)
    return model, processor


def build_tiny_vlm(out_dir, seed: int = 0, arch: str = "qwen2_5_vl", **size) -> Path:
    """Build a tiny random vision-language model offline and save it as a Hugging Face checkpoint folder.

    Args:
        out_dir (`str` or `Path`): Folder to write (`config.json`, `model.safetensors`, tokenizer and processor files).
        seed (`int`, *optional*, defaults to `0`): Seed of the weight initialisation.
        arch (`str`, *optional*, defaults to `"qwen2_5_vl"`): `"qwen2_5_vl"` or `"llava"`.
        **size: Overrides of `DEFAULT_SIZE` (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
            `num_key_value_heads`, `vision_hidden_size`, `vision_depth`, `vision_heads`, `initializer_range`,
            `min_pixels`, `max_pixels`).

    Returns:
        `Path`: `out_dir`, loadable with `AutoProcessor` and `AutoModelForImageTextToText`.
    """
    unknown = set(size) - set(DEFAULT_SIZE)
    if unknown:
        raise ValueError(f"build_tiny_vlm: unknown size argument(s) {sorted(unknown)}; valid: {sorted(DEFAULT_SIZE)}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"build_tiny_vlm: arch={arch!r} is not one of {ARCHITECTURES}")
    size = {**DEFAULT_SIZE, **size}
    out_dir = Path(out_dir)
    tok = build_tokenizer()
    model, processor = (_qwen_model if arch == "qwen2_5_vl" else _llava_model)(tok, seed, size)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "mmr1kit_build.json").write_text(json.dumps({"seed": seed, "arch": arch, **size}, indent=1))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)  # a crash mid-build never leaves a half-written model under the cached name
    return out_dir


def cache_dir() -> Path:
    """Where built models are cached: `$MMR1KIT_CACHE`, else `~/.cache/mmr1kit`."""
    return Path(os.environ.get("MMR1KIT_CACHE", Path.home() / ".cache" / "mmr1kit"))


def tiny_vlm(seed: int = 0, arch: str = "qwen2_5_vl", **size) -> Path:
    """Return the path of a tiny model with these parameters, building it once and reusing it afterwards.

    The cache key hashes the build parameters and this file's builder version, so a change of either rebuilds.
    """
    params = {"seed": seed, "arch": arch, **DEFAULT_SIZE, **size, "version": 1}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "models" / f"tiny-{arch}-{key}"
    if not (path / "config.json").exists():
        build_tiny_vlm(path, seed=seed, arch=arch, **size)
    return path


def load_processor(name_or_path, min_pixels: int | None = None, max_pixels: int | None = None):
    """Load the processor of any supported VLM; set Qwen-VL's pixel bounds when given.

    The bounds go into the image processor's `size` dict (`shortest_edge` = min pixels, `longest_edge` = max pixels),
    the place transformers 5 reads them from; passing `min_pixels` at call time is deprecated.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(name_or_path))
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    bounds = dict(size) if size is not None else {}
    if "longest_edge" in bounds and "shortest_edge" in bounds:  # Qwen-VL: pixel counts, not edge lengths
        if min_pixels is not None:
            bounds["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            bounds["longest_edge"] = int(max_pixels)
        image_processor.size = type(size)(**bounds)
    return processor


def load_policy(name_or_path, dtype: str | torch.dtype = "auto", **kwargs):
    """Load a Qwen2-VL / Qwen2.5-VL / LLaVA (or any image-text-to-text) checkpoint by path or hub id.

    The class comes from the checkpoint's `config.json` through `AutoModelForImageTextToText`, never from a substring
    of the path (MMR1 dispatched on path substrings and loaded Qwen2-VL for Qwen2.5-VL paths).
    """
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=dtype, **kwargs)


VISION_TOWERS = ("visual", "vision_tower", "vision_model")  # Qwen2/2.5-VL, LLaVA, Idefics / SmolVLM


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a VLM (a PEFT wrapper is looked through): `model.model.visual` for Qwen2/2.5-VL (its
    patch merger included, as EasyR1's `freeze_vision_tower` freezes it), `model.model.vision_tower` for LLaVA (the
    projector is not part of it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for holder in (getattr(base, "model", None), base):
        for name in VISION_TOWERS:
            tower = getattr(holder, name, None) if holder is not None else None
            if isinstance(tower, torch.nn.Module):
                return tower
    raise ValueError(f"freeze_vision_tower: {type(base).__name__} has no vision tower named {VISION_TOWERS} "
                     f"(under .model or at the top)")


def freeze_vision_tower(model) -> int:
    """Stop training the vision encoder (`MMR1Config.freeze_vision_tower`, EasyR1's name): its parameters, LoRA
    adapters inside it included, get `requires_grad=False` before the optimizer is built. Returns how many
    parameters were frozen."""
    params = list(vision_tower(model).parameters())
    for param in params:
        param.requires_grad_(False)
    return sum(p.numel() for p in params)
