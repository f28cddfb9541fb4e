"""What a loaded model takes, read from its config and processor (never from its name), and the dataset checks
that follow from it: a video row for a model without video, an image list longer than the model takes.

- `video_support(processor, config)`: `None` when mmr1kit can train the model on video rows, else the reason. The
  video hook (`mmr1kit.video`) passes `pixel_values_videos` + `video_grid_thw` and marks `video_token_id` tokens, so
  the processor must have a video processor that returns grids and the config a `video_token_id` (the Qwen-VL
  families). SmolVLM and InternVL have video processors but feed the frames to the model as images: give their
  frames as an `images` list instead.
- `max_images(processor, config, ...)`: how many images of the largest size fit in one prompt: the model's context
  (`max_position_embeddings`) less `max_completion_length` and the prompt's text, divided by the tokens one image
  takes (measured with the processor's own chat template). No processor in transformers 5.23 has a hard cap on
  images per prompt; the context is the limit that makes a long list fail (or be truncated) at run time.
- `check_dataset(dataset, processor, config, ...)`: applies both to every row, before any training: an error naming
  the row under `on_bad_example="error"`, else the row is dropped and counted in `dataset.bad_examples`
  (`video_unsupported`, `too_many_images`), which the run record's manifest lists.
"""

from __future__ import annotations

from PIL import Image


def _config(model):
    """The `PretrainedConfig` of a model, a config, or a checkpoint path."""
    if hasattr(model, "config"):
        return model.config
    if hasattr(model, "model_type"):
        return model
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(model))


def video_support(processor, model) -> str | None:
    """`None` when video rows can be trained and evaluated with this model, else why not (one sentence)."""
    config = _config(model)
    name = f"{type(processor).__name__} ({config.model_type})"
    if getattr(processor, "video_processor", None) is None:
        return f"{name} takes no video"
    if getattr(config, "video_token_id", None) is None:
        return (f"{name} has a video processor but its model has no video_token_id: it feeds video frames as "
                f"images, so give the frames as an 'images' list")
    return None


def tokens_per_image(processor, side: int) -> tuple[int, int]:
    """`(prompt tokens without an image, tokens one side x side image adds)`, with the processor's chat template."""
    text = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    image = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (side, side))},
                                          {"type": "text", "text": "x"}]}]
    n = [len(processor.apply_chat_template([c], add_generation_prompt=True, tokenize=True, return_dict=True)
             ["input_ids"][0]) for c in (text, image)]
    return n[0], n[1] - n[0]


def max_images(processor, model, *, max_pixels: int, max_completion_length: int, text_tokens: int = 0) -> int:
    """The most images of `max_pixels` pixels one prompt can hold within the model's context.

    Args:
        max_pixels (`int`): The largest image size in pixels (Qwen-VL processors resize down to it; fixed-size
            towers take every image at their own size).
        max_completion_length (`int`): Tokens reserved for the completion.
        text_tokens (`int`): Tokens of the prompt's text beyond the chat template's own.
    """
    config = _config(model)
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context is None:
        return 10**9
    base, per_image = tokens_per_image(processor, max(28, int(max_pixels**0.5)))
    return max(0, (context - max_completion_length - base - text_tokens) // max(per_image, 1))


def check_dataset(dataset, processor, model, args=None, *, mode: str | None = None, max_pixels: int | None = None,
                  max_completion_length: int | None = None):
    """Check every row's media against what the model takes; return the dataset (bad rows dropped under "skip").

    Args:
        dataset: As returned by `mmr1kit.data.load_dataset`; `None` or a dataset of single images passes as is.
        processor: The model's processor (`None`: loaded from the model's checkpoint).
        model: A model, its config, or a checkpoint path.
        args (`MMR1Config`, *optional*): Supplies `on_bad_example`, `max_pixels` and `max_completion_length`;
            the keyword arguments override it.

    Raises:
        `mmr1kit.data.DatasetError`: under `on_bad_example="error"`, for the first row the model cannot take, naming
            the row's id, the field and what the model accepts; also when no row is left.
    """
    if dataset is None or not ({"video", "image_paths"} & set(getattr(dataset, "column_names", []))):
        return dataset
    mode = mode or getattr(args, "on_bad_example", "error")
    max_pixels = max_pixels or getattr(args, "max_pixels", None) or 112 * 112
    max_completion_length = max_completion_length or getattr(args, "max_completion_length", None) or 16
    if processor is None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(_config(model)._name_or_path)
    from mmr1kit.data.loading import DatasetError

    columns = dataset.column_names
    bad: dict[str, list[tuple[str, DatasetError]]] = {}
    if "video" in columns:
        reason = video_support(processor, model)
        if reason is not None:
            bad["video_unsupported"] = [(i, DatasetError(f"row id {i!r}", None, "video", v, reason))
                                        for i, v in zip(dataset["id"], dataset["video"])]
    if "image_paths" in columns:
        limit = max_images(processor, model, max_pixels=max_pixels, max_completion_length=max_completion_length)
        for row_id, paths in zip(dataset["id"], dataset["image_paths"]):
            if len(paths) > limit:
                message = (f"{len(paths)} images; {_config(model).model_type} takes at most {limit} images of up to "
                           f"{max_pixels} pixels in one prompt (its context less max_completion_length="
                           f"{max_completion_length})")
                bad.setdefault("too_many_images", []).append(
                    (row_id, DatasetError(f"row id {row_id!r}", None, "images", paths, message)))
    if not bad:
        return dataset
    if mode == "error":
        raise next(iter(bad.values()))[0][1]
    drop = {row_id for errors in bad.values() for row_id, _ in errors}
    if len(drop) == len(dataset):
        raise next(iter(bad.values()))[0][1]  # nothing left to train on: the reason, not an empty run
    kept = dataset.filter(lambda row_id: row_id not in drop, input_columns="id")
    kept.bad_examples = {**(getattr(dataset, "bad_examples", None) or {}),
                         **{k: [(e.file, e.row, str(e)) for _, e in v] for k, v in bad.items()}}
    return kept
