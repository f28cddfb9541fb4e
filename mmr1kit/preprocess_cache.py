"""Each distinct image of a generation batch preprocessed once per step (`MMR1Config.encode_images_once`).

TRL 1.16 runs its processor over every row of a generation batch twice: `_tokenize_prompts` renders the chat template
with the images for generation, and `_generate_and_score_completions` calls `processing_class(images=..., text=...)`
again for the forward passes. Every prompt is repeated G times (`RepeatSampler`), so each image is resized,
normalised and patchified 2 G times a step. While a generation batch is built (`PreprocessCache.active`, used by
`mmr1kit.vision_cache.VisionCacheMixin`), the image processor's `preprocess` answers from a cache keyed by each
image's content (mode, size, palette and pixel bytes: an exact key, not a hash), so each distinct image is
preprocessed once and the second call reuses the pixel values of the first.

Only layouts whose pieces are per image are cached: patches concatenated with an `image_grid_thw` (Qwen-VL), or one
entry per image (LLaVA, Gemma 3, InternVL without crops), as a stacked tensor or a list. The first call of each form
(options and return type) runs as given; its output teaches the layout and is checked against the layout's own
reassembly, exactly. Anything else (Idefics3's and SmolVLM's per-row padding, LLaVA-NeXT's padded crops, image paths,
options that are not plain values) goes to the image processor unchanged. Counted per step: `images` (asked for),
`preprocessed` (handled by the image processor) and `unshared_rows` (rows none of whose images another row holds).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch


def image_key(image) -> tuple | None:
    """An exact content key of a PIL image or an array (equal keys <=> equal pixels), or `None` (path, URL, ...)."""
    if hasattr(image, "tobytes") and hasattr(image, "mode") and hasattr(image, "size"):  # PIL
        palette = image.getpalette() if image.mode in ("P", "PA") else None
        return ("pil", image.mode, image.size, tuple(palette or ()), image.tobytes())
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().contiguous().numpy()
    if hasattr(image, "dtype") and hasattr(image, "tobytes") and hasattr(image, "shape"):  # numpy
        return ("array", str(image.dtype), tuple(image.shape), image.tobytes())
    return None


def _flat_images(images) -> list | None:
    """The images of a processor call in order (one level of per-row nesting flattened), or `None` if any row has no
    image list (TRL passes `None` for a row without images) or the input is not a list."""
    if not isinstance(images, (list, tuple)):
        return [images] if image_key(images) is not None else None
    flat = []
    for item in images:
        if item is None:
            return None
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat


def _kwargs_key(kwargs: dict):
    """A hashable key of the image processor's options (`return_tensors` apart), or `None` if one is not a plain
    value (then nothing is cached)."""
    plain = (str, int, float, bool, type(None))
    items = []
    for k, v in sorted(kwargs.items()):
        if k == "return_tensors":
            continue
        if isinstance(v, (list, tuple)) and all(isinstance(x, plain) for x in v):
            v = tuple(v)
        elif isinstance(v, dict) and all(isinstance(x, plain) for x in v.values()):
            v = tuple(sorted(v.items()))
        elif not isinstance(v, plain):
            return None
        items.append((k, v))
    return tuple(items)


def _kind(value) -> str | None:
    if isinstance(value, torch.Tensor):
        return "tensor"
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return "ndarray"
    if isinstance(value, list):
        return "list"
    return None


def split_per_image(output, n: int) -> tuple[list[dict], dict] | None:
    """An image processor's output for `n` images -> (one dict of pieces per image, the layout), or `None` when the
    layout is not per image.

    Per-image layouts: a field with `sum(prod(image_grid_thw))` rows (patches, Qwen-VL; a piece is the image's rows),
    or a field with one entry per image (the grid itself; LLaVA's `(n, C, H, W)` or list of `(C, H, W)`; a piece is
    the entry). Entries of more than 3 dimensions (per-row padded images: Idefics3, LLaVA-NeXT) are not per image.
    The layout maps each field to `(container, "rows" | "entry", element kind)`.
    """
    data = dict(output)
    grid = data.get("image_grid_thw")
    counts = None
    if grid is not None:
        grid = torch.as_tensor(grid)
        if grid.dim() != 2 or grid.size(0) != n:
            return None
        counts = grid.prod(-1).tolist()
        if sum(counts) == n:  # one row per image: patches and images would be indistinguishable
            return None
    pieces, layout = [{} for _ in range(n)], {}
    for name, value in data.items():
        kind = _kind(value)
        if kind is None or getattr(value, "ndim", 1) == 0 or len(value) == 0:
            return None
        if counts is not None and name != "image_grid_thw" and kind != "list" and value.shape[0] == sum(counts):
            bounds = [0, *torch.tensor(counts).cumsum(0).tolist()]
            for i in range(n):
                pieces[i][name] = value[bounds[i] : bounds[i + 1]]
            layout[name] = (kind, "rows", kind)
        elif len(value) == n and _entry(value[0]):
            for i in range(n):
                pieces[i][name] = value[i]
            layout[name] = (kind, "entry", _kind(value[0]) or "other")
        else:
            return None
    return pieces, layout


def _entry(item) -> bool:
    """One image's entry: a number, or an array of at most 3 dimensions (not a row's list or stack of images)."""
    if isinstance(item, (int, float)):
        return True
    return _kind(item) in ("tensor", "ndarray") and item.ndim <= 3


def _as(kind: str, value):
    """`value` as a tensor or an array when `kind` says so (pieces of another return type); else unchanged."""
    import numpy as np

    if kind == "tensor":
        return torch.as_tensor(value)
    if kind == "ndarray":
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return value


def join_pieces(pieces: list[dict], layout: dict):
    """The inverse of `split_per_image`: the pieces of several images in the image processor's layout (pieces of
    another return type of the same options are converted: a list of `(C, H, W)` tensors <-> one stacked tensor)."""
    import numpy as np
    from transformers import BatchFeature

    out = {}
    for name, (container, how, element) in layout.items():
        parts = [_as(element, p[name]) for p in pieces]
        if container == "list":
            out[name] = parts
        elif how == "rows":
            out[name] = torch.cat(parts) if container == "tensor" else np.concatenate(parts)
        else:
            out[name] = torch.stack(parts) if container == "tensor" else np.stack(parts)
    return BatchFeature(data=out)


def same_output(a, b) -> bool:
    """Whether two image-processor outputs are equal: same fields, container types, dtypes and values, exactly."""
    import numpy as np

    if isinstance(a, dict) or hasattr(a, "keys"):
        return hasattr(b, "keys") and list(a.keys()) == list(b.keys()) and all(same_output(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_output(x, y) for x, y in zip(a, b))
    return a == b


class PreprocessCache:
    """Per-trainer state of the preprocessing cache: the layout of each form of call (the image processor's options
    and return type), learnt from its first call and checked against it, and the counts of the current step."""

    def __init__(self):
        self.layouts = {}  # form -> layout, or None when the form's output is not per image
        self.stats = Counter()

    @contextlib.contextmanager
    def active(self, processor, count: bool = True):
        """While the block runs, `processor.image_processor` preprocesses each distinct image once (its `preprocess`,
        which the image processor's `__call__` calls, is an instance attribute for the duration)."""
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None or "preprocess" in vars(image_processor):
            yield
            return
        image_processor.preprocess = _Preprocessing(image_processor.preprocess, self, count)
        try:
            yield
        finally:
            del image_processor.preprocess

    def count(self, enabled: bool, **values) -> None:
        if enabled:
            self.stats.update(values)


class _Preprocessing:
    """The image processor's `preprocess` during one generation batch: per-image pieces by content key."""

    def __init__(self, original, cache: PreprocessCache, count: bool):
        self.original, self.cache, self.counting = original, cache, count
        self.pieces = {}  # (options, image key) -> the image's pieces
        self.keys = {}  # id(image) -> (image, key): each image object is read once; holding it keeps its id unique
        self.rows_counted = False

    def key(self, image):
        hit = self.keys.get(id(image))
        if hit is None:
            hit = self.keys[id(image)] = (image, image_key(image))
        return hit[1]

    def plain(self, n: int, images, args, kwargs):
        self.cache.count(self.counting, images=n, preprocessed=n)
        return self.original(images, *args, **kwargs)

    def __call__(self, images, *args, **kwargs):
        layouts = self.cache.layouts
        flat, options = _flat_images(images), _kwargs_key(kwargs)
        form = (options, repr(kwargs.get("return_tensors")))
        keys = None if flat is None or args or options is None else [self.key(im) for im in flat]
        if keys is not None and None not in keys and not self.rows_counted and isinstance(images, (list, tuple)):
            self.rows_counted = True  # the generation batch's rows (the first call): those that share no image
            self.cache.count(self.counting, unshared_rows=unshared_rows(images, self.key))
        if keys is None or None in keys or layouts.get(form, True) is None:
            return self.plain(len(flat or []), images, args, kwargs)
        if form not in layouts:  # the first call of this form runs as given, and teaches and checks the layout
            out = self.plain(len(flat), images, args, kwargs)
            split = split_per_image(out, len(flat))
            if split is not None:
                for k, piece in zip(keys, split[0]):
                    self.pieces.setdefault((options, k), piece)
                joined = join_pieces([self.pieces[(options, k)] for k in keys], split[1])
                split = split if same_output(joined, out) else None
            layouts[form] = None if split is None else split[1]
            return out
        missing = {k: image for k, image in zip(keys, flat) if (options, k) not in self.pieces}
        if missing:
            split = split_per_image(self.original(list(missing.values()), **kwargs), len(missing))
            self.cache.count(self.counting, preprocessed=len(missing))
            if split is None or split[1] != layouts[form]:
                layouts[form] = None
                return self.plain(len(flat), images, args, kwargs)
            self.pieces.update({(options, k): piece for k, piece in zip(missing, split[0])})
        self.cache.count(self.counting, images=len(flat))
        return join_pieces([self.pieces[(options, k)] for k in keys], layouts[form])


def unshared_rows(rows, key) -> int:
    """Rows (lists of images) none of whose images appears in another row."""
    row_keys = [{key(im) for im in (row if isinstance(row, (list, tuple)) else [row])} for row in rows]
    holders = Counter(k for keys in row_keys for k in keys)
    return sum(all(holders[k] == 1 for k in keys) for keys in row_keys)
