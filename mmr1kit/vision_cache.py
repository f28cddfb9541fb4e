"""Each distinct image of a generation batch preprocessed once per step and encoded once per forward pass.

TRL 1.16 repeats every prompt of a GRPO group G times (`RepeatSampler`), image included, and treats the copies as
unrelated rows: its processor runs over every copy twice per generation batch (`_tokenize_prompts` for generation,
`processing_class(images=..., text=...)` in `_generate_and_score_completions` for the forward passes), and the vision
tower encodes every copy again in each forward pass (the generation prefill, the old / reference log-prob passes and
the loss pass): G - 1 of every G encodings repeat one (`docs/profile.md`). Two exact caches remove the repeats; the
trainer uses them through `VisionCacheMixin`, switched by `MMR1Config.encode_images_once` (default on):

- **Preprocessing** (`mmr1kit.preprocess_cache`): while a generation batch is built, the image processor answers
  from a cache keyed by each image's content, so each distinct image is preprocessed once per step and the second
  processor call reuses the pixel values of the first.
- **Encoding** (`shared_image_features`): during a forward pass, the innermost module with a `get_image_features`
  method (the interface transformers' VLMs share; the model's forward calls it once per forward with the forward's
  images) answers from a per-pass cache: the images of the call are matched by their pixel values (a sampled
  fingerprint, confirmed by `torch.equal`), those not encoded yet in this pass are encoded in one call of the original
  method, and every row gets its images' features. In the loss pass the features keep their graph, so the gradient
  reaching a shared image's encoding is the sum over the rows that use it, as it is over the copies on TRL's path.

Exactness: the pixel values are the image processor's own, bit for bit, and the features come from the same vision
tower on the same pixels, in a smaller batch (equal to float rounding; `tests/test_vision_cache.py` compares losses,
log-probs and gradient norms with TRL's path to 1e-6). Sampling is untouched: generation sees the same features.

Detected from the data, never assumed: images are matched by content, not by their position in a group, so several
images per row, a dataset that varies the image within a group, or rows of different groups that share an image all
work; an image that no other row holds is encoded for its row alone, as on TRL's path (`vision/unshared_rows`).
Calls whose inputs these caches do not recognise (pixel values that are neither patches with a grid nor one image per
entry, tensor arguments besides the grid, dropout active in a training forward, an output without per-image
`pooler_output`) run the original method on the whole input (`vision/fallback_images`). Logged per optimizer step
(`docs/metrics.md`): `vision/preprocessed`, `vision/encoded`, `vision/encoded_by_trl`, `vision/unshared_rows`,
`vision/fallback_images`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter

import torch

from mmr1kit.preprocess_cache import PreprocessCache

FINGERPRINT = 64  # pixel values sampled per image to find candidate duplicates (confirmed by torch.equal)


# --- encoding ---------------------------------------------------------------------------------------------------------


def feature_module(model) -> torch.nn.Module | None:
    """The innermost module of `model` whose class defines `get_image_features` (transformers' `*Model` of a VLM,
    e.g. `Qwen2_5_VLModel`, `LlavaModel`, under a `*ForConditionalGeneration` or a PEFT wrapper), or `None` when
    there is not exactly one."""
    found = [m for m in model.modules() if callable(getattr(type(m), "get_image_features", None))]
    inner = [m for m in found if not any(o is not m and any(o is s for s in m.modules()) for o in found)]
    return inner[0] if len(inner) == 1 else None


def dropout_active(module: torch.nn.Module) -> bool:
    """Whether a training forward of `module`'s vision part would draw dropout (then each copy needs its own draw).

    Looks at every `nn.Dropout` with `p > 0` outside the language model (e.g. LoRA dropout on the vision tower) and
    at the `*dropout*` fields of the vision config (attention dropout is drawn functionally)."""
    if not module.training:
        return False
    decoder = getattr(module, "language_model", None)
    text = {id(m) for m in decoder.modules()} if isinstance(decoder, torch.nn.Module) else set()
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 and id(m) not in text for m in module.modules()):
        return True
    vision = getattr(getattr(module, "config", None), "vision_config", None)
    values = vision.to_dict() if hasattr(vision, "to_dict") else {}
    return any("dropout" in k and isinstance(v, (int, float)) and v > 0 for k, v in values.items())


def _per_image_pixels(pixel_values, grid):
    """The call's pixel values as one tensor per image, or `None` if their layout is not one of the two known."""
    if not isinstance(pixel_values, torch.Tensor):
        return None
    if grid is not None:
        if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or pixel_values.dim() != 2:
            return None
        counts = grid.prod(-1).tolist()
        return list(torch.split(pixel_values, counts)) if sum(counts) == pixel_values.size(0) else None
    return list(pixel_values.unbind(0)) if pixel_values.dim() == 4 else None


def _image_count(pixel_values, grid) -> int:
    """Images in a call whose layout is not recognised (for the fallback count): grid rows, else leading entries."""
    for value in (grid, pixel_values):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.size(0)
    return 0


def fingerprints(images: list[torch.Tensor]) -> list[tuple]:
    """A cheap key per image: its shape and `FINGERPRINT` evenly spaced values (one transfer for all images)."""
    samples = []
    for image in images:
        flat = image.reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT, flat.numel()), device=flat.device).long()
        samples.append(flat[index].float())
    values = torch.stack(samples).cpu().numpy() if samples else []
    return [(tuple(image.shape), row.tobytes()) for image, row in zip(images, values)]


def split_features(output, n: int) -> list[dict] | None:
    """`get_image_features`' output for `n` images -> the features of each image, or `None` if it is not per image.

    `pooler_output`: a tuple / list of `n` tensors (Qwen-VL, LLaVA) or a tensor of `n` rows (Gemma 3, InternVL);
    Qwen3-VL's `deepstack_features`: per layer, `n` tensors (transformers 5.23) or one tensor of all images' tokens
    (5.17).
    """
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, (tuple, list)) and len(pooled) == n:
        per = [{"pooler_output": p} for p in pooled]
    elif isinstance(pooled, torch.Tensor) and pooled.dim() > 1 and pooled.size(0) == n:
        per = [{"pooler_output": p} for p in pooled.unbind(0)]
    else:
        return None
    deep = getattr(output, "deepstack_features", None)
    if deep is not None:
        lengths = [p["pooler_output"].size(0) for p in per]
        layers = []
        for layer in deep:
            if isinstance(layer, (tuple, list)) and len(layer) == n:
                layers.append(list(layer))
            elif isinstance(layer, torch.Tensor) and layer.size(0) == sum(lengths):
                layers.append(list(torch.split(layer, lengths)))
            else:
                return None
        for i, p in enumerate(per):
            p["deepstack_features"] = [layer[i] for layer in layers]
    return per


def join_features(template, per_image: list[dict]):
    """An output of `template`'s type and layout holding `per_image` features, in order (other fields `None`)."""
    pooled = template.pooler_output
    features = [p["pooler_output"] for p in per_image]
    fields = {"pooler_output": torch.stack(features) if isinstance(pooled, torch.Tensor) else type(pooled)(features)}
    deep = getattr(template, "deepstack_features", None)
    if deep is not None:
        per_layer = list(zip(*[p["deepstack_features"] for p in per_image]))
        fields["deepstack_features"] = [
            torch.cat(layer) if isinstance(old, torch.Tensor) else type(old)(layer)
            for old, layer in zip(deep, per_layer)
        ]
    return type(template)(**fields)


class _Pass:
    """The images encoded so far in one forward pass: fingerprint -> [(pixels, features)]."""

    def __init__(self, original, module, stats):
        self.original, self.module, self.stats = original, module, stats
        self.signature = self.__signature__ = inspect.signature(original)  # read by transformers' generate
        self.seen = {}
        self.template = None
        self.dropout = None  # dropout_active(module), computed at the first call

    def plain(self, n: int, args, kwargs):
        self.stats.update(images=n, encoded=n, fallback_images=n)
        return self.original(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return self.original(*args, **kwargs)
        arguments = dict(bound.arguments)
        var_kw = next((p.name for p in self.signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
        arguments.update(arguments.pop(var_kw, None) or {})
        pixel_values, grid = arguments.get("pixel_values"), arguments.get("image_grid_thw")
        images = _per_image_pixels(pixel_values, grid)
        n = len(images) if images is not None else _image_count(pixel_values, grid)
        tensors = {k for k, v in arguments.items() if isinstance(v, torch.Tensor)} - {"pixel_values", "image_grid_thw"}
        return_dict = arguments.get("return_dict")
        return_dict = getattr(self.module.config, "return_dict", True) if return_dict is None else return_dict
        if self.dropout is None:
            self.dropout = dropout_active(self.module)
        # pixels that need a gradient of their own (each copy its own), or dropout (each copy its own draw)
        if not images or tensors or not return_dict or self.dropout or pixel_values.requires_grad:
            return self.plain(n, args, kwargs)
        options = repr(sorted((k, v) for k, v in arguments.items() if k not in ("pixel_values", "image_grid_thw")))
        grids = grid.tolist() if grid is not None else [None] * n
        keys = [(options, tuple(g or ()), fp) for g, fp in zip(grids, fingerprints(images))]  # features: f(all three)
        slots, new = [], []  # per image: the entry holding its features; the images to encode
        for i, key in enumerate(keys):
            entry = next((e for e in self.seen.get(key, []) if torch.equal(e[0], images[i])), None)
            if entry is None:
                entry = [images[i], None]
                self.seen.setdefault(key, []).append(entry)
                new.append((i, entry))
            slots.append(entry)
        if new:
            batch = dict(arguments, return_dict=True)
            index = [i for i, _ in new]
            batch["pixel_values"] = (torch.cat if grid is not None else torch.stack)([images[i] for i in index])
            if grid is not None:
                batch["image_grid_thw"] = grid[index]
            out = self.original(**batch)
            per = split_features(out, len(new))
            if per is None:  # not per image: forget these images and run the call as given
                for i, entry in new:
                    self.seen[keys[i]].remove(entry)
                return self.plain(n, args, kwargs)
            self.template = out
            for (_, entry), features in zip(new, per):
                entry[1] = features
        self.stats.update(images=n, encoded=len(new))
        return join_features(self.template, [entry[1] for entry in slots])


@contextlib.contextmanager
def shared_image_features(model, stats: Counter | None = None, enabled: bool = True):
    """While the block runs `model` (one forward pass, in any number of chunks), each distinct image is encoded once.

    `stats` counts `images` (in the calls), `encoded` (through the vision tower) and `fallback_images` (encoded
    TRL's way because the call's inputs were not recognised). Nothing happens when `enabled` is false, when `model`
    has no single innermost `get_image_features`, or inside another such block on the same model.
    """
    module = feature_module(model) if enabled else None
    if module is None or "get_image_features" in vars(module):
        yield
        return
    module.get_image_features = _Pass(module.get_image_features, module, Counter() if stats is None else stats)
    try:
        yield
    finally:
        del module.get_image_features


# --- the trainer hook -------------------------------------------------------------------------------------------------


class VisionCacheMixin:
    """Put before `GRPOTrainer` in a trainer's bases (as `MMR1Trainer` does): the two caches of this module, around
    the generation batch (preprocessing), the generation call and every log-prob pass (encoding), and their counts
    logged as `vision/*` per optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encode_images_once = bool(getattr(self.args, "encode_images_once", True))
        self._preprocess_cache = PreprocessCache()
        self._encode_stats = Counter()

    def _generate_and_score_completions(self, inputs):
        if not self.encode_images_once:
            return super()._generate_and_score_completions(inputs)
        with self._preprocess_cache.active(self.processing_class, count=self.model.training):
            return super()._generate_and_score_completions(inputs)

    def _shared(self, model):
        stats = self._encode_stats if self.model.training else Counter()
        return shared_image_features(self.accelerator.unwrap_model(model), stats, enabled=self.encode_images_once)

    def _generate_single_turn(self, *args, **kwargs):
        with self._shared(self.model):  # HF generate: the prefill's images (vLLM: nothing of ours runs)
            return super()._generate_single_turn(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        with self._shared(model):
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch):
        out = super().training_step(model, inputs, num_items_in_batch)
        if self.encode_images_once and self._step % self.current_gradient_accumulation_steps == 0:
            pre, enc = self._preprocess_cache.stats, self._encode_stats
            metrics = self._metrics["train"]
            metrics["vision/preprocessed"].append(pre["preprocessed"])
            metrics["vision/unshared_rows"].append(pre["unshared_rows"])
            metrics["vision/encoded"].append(enc["encoded"])
            metrics["vision/encoded_by_trl"].append(enc["images"])
            metrics["vision/fallback_images"].append(enc["fallback_images"])
            pre.clear()
            enc.clear()
        return out
