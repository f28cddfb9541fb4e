"""Load vision-language policies, and build the tiny offline models that are mmr1kit's embedded default.

`build_tiny_vlm` writes a real Hugging Face checkpoint folder: a byte-level BPE tokenizer trained locally (Qwen2's
pre-tokenizer, the family's special tokens and chat template), the stock processor of the architecture, and random
weights. `AutoProcessor.from_pretrained` / `AutoModelForImageTextToText.from_pretrained` load it like any hub model,
so the rest of mmr1kit never branches on "tiny" or on a model's name.

The families that can be built are the `model_type`s of `mmr1kit.families.FAMILIES`: `"qwen2_5_vl"` (the default
policy, as in MMR1's Qwen2.5-VL runs), `"llava"` (MMR1's quick start trained LLaVA-1.5), `"qwen2_vl"`, `"qwen3_vl"`,
`"gemma3"`, `"idefics3"`, `"smolvlm"` and `"internvl"`; the tests train every one through the same code path.
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch

from mmr1kit.families import FAMILIES, family

ARCHITECTURES = tuple(FAMILIES)
SPECIAL_TOKENS = FAMILIES["qwen2_5_vl"].special_tokens  # the default tiny model's tokenizer

# Size "S" of docs/demo.md: 0.7M parameters, learns the counting task in minutes.
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


# The prompts the tokenizer is trained on, frozen here rather than read from `mmr1kit.data.templates`: the BPE
# vocabulary (and with it the tiny model's token ids, its weights and every result recorded with it) must not change
# when a template is added or edited. Reading the registry did exactly that: making MMR1's grounding prompt verbatim
# (two missing spaces) added a BPE token, shifted the special-token ids, and moved the demo from 86.0% to 82.4%.
# Any text still tokenizes: byte-level BPE covers every byte.
TOKENIZER_PROMPTS = (
    "You are a helpful assistant. ",
    (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions."
    ),
    (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
    ),
    "You are given an image. You should ocr the image and output the text in the image without other output.",
    (
        "You are given an image and an object to box in text. You should output the bounding box of the object, which "
        "should only be a list of floats. Here is an example of what you should output: [x_min, y_min, x_max, y_max]. "
        "Please mind directly to output the list, do not add any other text."
    ),
    "How many?",
    "How many? Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    "How many? Output the final answer (number) in <answer> </answer> tags.",
    "Output the bounding box of the How many? in the image.",
)


def _corpus() -> list[str]:
    """Sentences that cover the prompts, answers and boxes of mmr1kit's tasks, for training the BPE tokenizer."""
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray"]
    shapes = ["circle", "circles", "square", "squares", "triangle", "triangles", "object", "objects"]
    # "" and the default prompt twice: the registry's order when the demo's results were recorded (BPE counts pairs)
    lines = ["", TOKENIZER_PROMPTS[0], *TOKENIZER_PROMPTS]
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


def build_tokenizer(vocab_size: int = 1024, arch: str = "qwen2_5_vl"):
    """Train a byte-level BPE with Qwen2's pre-tokenizer and wrap it as a `Qwen2Tokenizer` (no download).

    Byte-level BPE covers all 256 bytes, so no input ever maps to an unknown token. The special tokens of `arch`'s
    family (`mmr1kit.families.FAMILIES`) follow the BPE vocabulary; its named ones (e.g. Gemma 3's `boi_token`)
    become tokenizer attributes. One tokenizer class serves every family: the processors only need the tokens.
    """
    fam = family(arch)
    specials = fam.special_tokens
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
    for i, t in enumerate(specials):
        vocab[t] = n_bpe + i
    named = set(fam.named.values())
    hf_tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=fam.eos,
        pad_token="<|endoftext|>",
        bos_token=fam.bos,
        extra_special_tokens=fam.named or [t for t in specials[1:] if t not in named],
    )
    if fam.named:  # named specials are attributes; the others are added as plain special tokens
        hf_tok.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in named]})
    hf_tok.padding_side = "left"
    return hf_tok


def build_tiny_vlm(out_dir, seed: int = 0, arch: str = "qwen2_5_vl", **size) -> Path:
    """Build a tiny random vision-language model offline and save it as a Hugging Face checkpoint folder.

    Args:
        out_dir (`str` or `Path`): Folder to write (`config.json`, `model.safetensors`, tokenizer and processor files).
        seed (`int`, *optional*, defaults to `0`): Seed of the weight initialisation.
        arch (`str`, *optional*, defaults to `"qwen2_5_vl"`): A `model_type` of `mmr1kit.families.FAMILIES`
            (`qwen2_5_vl`, `qwen2_vl`, `qwen3_vl`, `llava`, `gemma3`, `idefics3`, `smolvlm`, `internvl`).
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
    tok = build_tokenizer(arch=arch)
    model, processor = family(arch).build(tok, seed, size)
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


@contextlib.contextmanager
def cache_lock(entry):
    """Hold an exclusive lock on `<entry>.lock` while building a cache entry: processes that start at once (the
    points of a sweep, the tasks of a Slurm array) build it once; the others wait, then find it built.
    (The standard library's `fcntl.flock`: a lock on a file that is released when its holder exits or dies.)"""
    import fcntl

    path = Path(f"{entry}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def tiny_vlm(seed: int = 0, arch: str = "qwen2_5_vl", **size) -> Path:
    """Return the path of a tiny model with these parameters, building it once and reusing it afterwards.

    The cache key hashes the build parameters, the tokenizer's corpus and this file's builder version, so a change of
    any of them rebuilds.
    """
    corpus = hashlib.sha256("\n".join(_corpus()).encode()).hexdigest()[:12]
    params = {"seed": seed, "arch": arch, **DEFAULT_SIZE, **size, "corpus": corpus, "version": 2}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "models" / f"tiny-{arch}-{key}"
    if not (path / "config.json").exists():
        with cache_lock(path):
            if not (path / "config.json").exists():
                build_tiny_vlm(path, seed=seed, arch=arch, **size)
    return path


def resolve_model(name_or_path: str) -> str:
    """`"tiny"` / `"tiny-<model_type>"` (e.g. `"tiny-llava"`, `"tiny-gemma3"`; `mmr1kit.families.FAMILIES`) → the
    cached tiny model's folder; anything else is returned as given."""
    if name_or_path == "tiny":
        return str(tiny_vlm())
    arch = str(name_or_path).removeprefix("tiny-")
    if str(name_or_path).startswith("tiny-") and arch in ARCHITECTURES:
        return str(tiny_vlm(arch=arch))
    return str(name_or_path)


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


def peft_base(model):
    """The model under a PEFT wrapper (`get_base_model()`), or `model` itself when it is not wrapped."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


VISION_TOWERS = ("visual", "vision_tower", "vision_model")  # Qwen2/2.5-VL, LLaVA, Idefics / SmolVLM


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a VLM (a PEFT wrapper is looked through): `model.model.visual` for Qwen2/2.5-VL (its
    patch merger included, as EasyR1's `freeze_vision_tower` freezes it), `model.model.vision_tower` for LLaVA (the
    projector is not part of it)."""
    base = peft_base(model)
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
