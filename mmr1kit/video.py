"""Video rows in GRPO training: the smallest hook that TRL 1.16's `GRPOTrainer` needs for them.

What TRL 1.16 does with a video (read in `trl/trainer/grpo_trainer.py`): nothing of its own. It reads only the
`image` / `images` columns; a `{"type": "video"}` part in a prompt survives `prepare_multimodal_messages` and reaches
the processor in `_tokenize_prompts`, so generation would see the video, but the scoring passes (old / reference
log-probs, `_generate_and_score_completions`) and the loss pass (`_compute_loss`) build their forward inputs from the
images alone: the video would silently be missing from every log-prob the loss uses. `_get_per_token_logps_and_entropies`
has no video arguments, and its chunking slices only image tensors.

The hook, used by `MMR1Trainer` through four one-line calls:

- `attach(inputs)`: a video row's prompt gets its frames (`{"type": "video", "video": [PIL, ...]}`) and metadata,
  decoded by `mmr1kit.data.frames.load_frames` (frame list or file, `fps` / `max_frames`);
- `tokenize(trainer, prompts)`: replaces `_tokenize_prompts` for batches with a video: the processor renders, expands
  and encodes the videos with their metadata (timestamps, `second_per_grid_ts`), and the per-row video tensors are kept;
- `scoring(model)`: while TRL scores a batch, a forward pre-hook hands each chunk's rows their video tensors and the
  `mm_token_type_ids` (video tokens = 2) that M-RoPE needs;
- the per-row tensors travel in the batch as `video_inputs` (a list, which TRL shuffles and splits with the rest),
  and `active(rows)` scopes them around the loss pass.

Supported: models whose processor returns `pixel_values_videos` with `video_grid_thw` and whose config has a
`video_token_id` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL); `mmr1kit.capabilities.video_support` says why another model is
not. Not supported (refused when the trainer is built): vLLM rollouts of video rows. The exact KL (`kl/exact`) reuses
the hidden states of the hooked policy and reference passes, so it sees the video too.
"""

from __future__ import annotations

import contextlib

import torch

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


class VideoHook:
    """Per-trainer state: the video tensors of the rows being scored, one dict per row, or `None`."""

    def __init__(self, video_token_id: int | None, image_token_id: int | None = None):
        self.video_token_id = video_token_id
        self.image_token_id = image_token_id
        self.rows: list[dict] | None = None

    # --- prompts ---------------------------------------------------------------------------------------------------

    @staticmethod
    def attach(inputs: list[dict]) -> list[dict]:
        """`inputs` with each video row's `{"type": "video"}` part holding its decoded frames and metadata."""
        from mmr1kit.data.media import with_frames

        if not inputs or inputs[0].get("video") is None:
            return inputs
        return [{**x, "prompt": with_frames(x)} for x in inputs]

    def tokenize(self, trainer, prompts: list) -> tuple | None:
        """`_tokenize_prompts` for a batch with videos: `(prompt_ids, images, multimodal_fields)`, or `None` when no
        prompt has a video (TRL's own path then runs). The rows' video tensors are kept in `self.rows`."""
        from trl.data_utils import prepare_multimodal_messages

        from mmr1kit.data.media import pop_metadata

        first = prompts[0] if prompts else []
        if not any(p.get("type") == "video" for m in first if isinstance(m["content"], list) for p in m["content"]):
            return None
        prompts = [prepare_multimodal_messages(p) for p in prompts]
        metadata = [meta for prompt in prompts for meta in pop_metadata(prompt)]
        images = [[p["image"] for m in prompt for p in m["content"] if p.get("type") == "image"] or None
                  for prompt in prompts]
        tokenized = trainer.processing_class.apply_chat_template(
            conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True,
            processor_kwargs={"video_metadata": metadata, "do_sample_frames": False}, **trainer.chat_template_kwargs)
        fields = {k: v for k, v in tokenized.items() if k not in ("input_ids", "attention_mask")}
        self.rows = split_rows(fields, len(prompts))
        return tokenized["input_ids"], (images if any(images) else None), fields

    # --- scoring -----------------------------------------------------------------------------------------------------

    def collate(self, rows: list[dict], input_ids: torch.Tensor) -> dict:
        """The forward keyword arguments of `rows` (in order) for `input_ids` `(B, L)`: video tensors concatenated
        over rows, and `mm_token_type_ids` `(B, L)` (1 = image token, 2 = video token)."""
        out = {k: torch.cat([r[k] for r in rows]).to(input_ids.device) for k in rows[0]}
        types = torch.zeros_like(input_ids)
        if self.image_token_id is not None:
            types[input_ids == self.image_token_id] = 1
        types[input_ids == self.video_token_id] = 2
        out["mm_token_type_ids"] = types
        return out

    @contextlib.contextmanager
    def active(self, rows: list[dict] | None):
        """Make `rows` the rows scored by the forwards inside the block (nothing when `None`)."""
        previous, self.rows = self.rows, rows if rows is not None else self.rows
        try:
            yield
        finally:
            self.rows = previous if rows is not None else self.rows

    @contextlib.contextmanager
    def scoring(self, model):
        """While TRL runs `model` over the active rows (in order, in chunks), give each chunk its video inputs.

        TRL's `_get_per_token_logps_and_entropies` calls `model(input_ids=..., ...)` once per chunk of consecutive
        rows; the pre-hook takes the next `input_ids.size(0)` rows each time.
        """
        if self.rows is None:
            yield
            return
        rows, cursor = self.rows, [0]

        def hook(_module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is None:
                return None
            chunk = rows[cursor[0] : cursor[0] + ids.size(0)]
            cursor[0] += ids.size(0)
            return args, {**kwargs, **self.collate(chunk, ids)}

        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            if cursor[0] != len(rows):
                raise RuntimeError(f"video hook: {cursor[0]} rows were scored but the batch has {len(rows)} "
                                   f"video rows; TRL's chunking changed?")

    def take(self) -> list[dict] | None:
        """The rows of the batch just generated (to travel in the batch as `video_inputs`); clears the state."""
        rows, self.rows = self.rows, None
        return rows


def split_rows(fields: dict, n: int) -> list[dict]:
    """One dict of video tensors per row (one video per row) from the processor's batched output.

    `pixel_values_videos` `(sum of rows' patches, D)` is split by `video_grid_thw.prod(-1)`; `video_grid_thw` `(n, 3)`
    and `second_per_grid_ts` `(n,)` (Qwen2.5-VL) by row.
    """
    grid = torch.as_tensor(fields["video_grid_thw"])
    if grid.size(0) != n:
        raise ValueError(f"video hook: {grid.size(0)} videos for {n} prompts: one video per row is supported")
    pixels = torch.as_tensor(fields["pixel_values_videos"])
    chunks = torch.split(pixels, grid.prod(-1).tolist())
    rows = [{"pixel_values_videos": c, "video_grid_thw": grid[i : i + 1]} for i, c in enumerate(chunks)]
    if fields.get("second_per_grid_ts") is not None:
        seconds = torch.as_tensor(fields["second_per_grid_ts"], dtype=torch.float32)
        for i, row in enumerate(rows):
            row["second_per_grid_ts"] = seconds[i : i + 1]
    return rows


def check_video_args(train_dataset, args) -> None:
    """Refuse the settings the video hook does not cover, naming the field, before any model is loaded."""
    if train_dataset is None or "video" not in getattr(train_dataset, "column_names", []):
        return
    if getattr(args, "use_vllm", False):
        raise ValueError("use_vllm=True: video rows are generated with transformers only (TRL 1.16 hands vLLM "
                         "images, not videos); set use_vllm=False")


class VideoTrainerMixin:
    """Put before `GRPOTrainer` in a trainer's bases (as `MMR1Trainer` does): the hook of this module.

    Each override adds the video rows' inputs to what TRL already does and calls it; batches without a video go
    through TRL unchanged.
    """

    def __init__(self, *args, **kwargs):
        check_video_args(kwargs.get("train_dataset"), kwargs.get("args"))
        super().__init__(*args, **kwargs)
        config = self.accelerator.unwrap_model(self.model).config
        # A sampled video token would mismatch the video features: mmr1kit.sampling.suppress_vision_tokens (called
        # by MMR1Trainer) forbids it in both engines, with every other vision special token.
        self._video = VideoHook(getattr(config, "video_token_id", None), getattr(config, "image_token_id", None))

    def _tokenize_prompts(self, prompts):
        out = self._video.tokenize(self, prompts)
        return out if out is not None else super()._tokenize_prompts(prompts)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        with self._video.scoring(model):
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(self._video.attach(inputs))
        rows = self._video.take()
        if rows is not None:
            output["video_inputs"] = rows  # a list: TRL shuffles and splits it with the batch
        return output

    def compute_loss(self, model, inputs, *args, **kwargs):
        with self._video.active(inputs.get("video_inputs")):
            return super().compute_loss(model, inputs, *args, **kwargs)
