"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL: ChatML, `<|image_pad|>` / `<|video_pad|>` placeholders, M-RoPE.

All three take images and videos through the same processor layout (`pixel_values` + `image_grid_thw`,
`pixel_values_videos` + `video_grid_thw`). Images and video frames are sized by pixel counts (`min_pixels`,
`max_pixels`), so a 112x112 picture is 8x8 patches of 14 px (4x4 of 16 px for Qwen3-VL) and 16 (4) tokens.
"""

from mmr1kit.families.common import chatml, finish, text_dims, token_ids

QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
               "<|box_start|>", "<|box_end|>", "<|object_ref_start|>", "<|object_ref_end|>"]
# The official Qwen2-VL chat template (an image part renders as <|vision_start|><|image_pad|><|vision_end|>).
QWEN_CHAT_TEMPLATE = chatml("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>")


def _mrope(size: dict, head_dim: int) -> list[int]:
    """M-RoPE sections (temporal, height, width); they must sum to `head_dim / 2`."""
    half = head_dim // 2
    return [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]


def _text(tok, size: dict, **extra) -> dict:
    head_dim = size["hidden_size"] // size["num_attention_heads"]
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope(size, head_dim), **extra.pop("rope", {})}
    return dict(**text_dims(tok, size, eos="<|im_end|>", pad="<|endoftext|>"), rope_parameters=rope,
                tie_word_embeddings=False, **extra)


def _pixels(size: dict) -> dict:
    return {"shortest_edge": size["min_pixels"], "longest_edge": size["max_pixels"]}


def _finish_qwen(model_class, config_class, processor_class, video_class, tok, seed, size, text, vision, patch):
    from transformers import Qwen2VLImageProcessorPil

    ids = token_ids(tok, ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    config = config_class(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], initializer_range=size["initializer_range"],
        tie_word_embeddings=False)
    model = finish(model_class, config, tok, seed, eos=["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>")
    image_processor = Qwen2VLImageProcessorPil(size=_pixels(size), patch_size=patch, temporal_patch_size=2,
                                               merge_size=2)
    # Frames are sized like images (the stock video bounds would upscale a 112 px frame to ~300 px).
    video_processor = video_class(size=_pixels(size), patch_size=patch, temporal_patch_size=2, merge_size=2,
                                  min_frames=2, max_frames=16)
    processor = processor_class(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def build_qwen2_vl(tok, seed: int, size: dict):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    vision = dict(depth=size["vision_depth"], embed_dim=size["vision_hidden_size"], hidden_size=size["hidden_size"],
                  mlp_ratio=2, num_heads=size["vision_heads"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, initializer_range=size["initializer_range"])
    return _finish_qwen(Qwen2VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLProcessor, Qwen2VLVideoProcessor, tok,
                        seed, size, _text(tok, size), vision, patch=14)


def build_qwen2_5_vl(tok, seed: int, size: dict):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLVideoProcessor,
    )

    vision = dict(depth=size["vision_depth"], hidden_size=size["vision_hidden_size"],
                  intermediate_size=2 * size["vision_hidden_size"], num_heads=size["vision_heads"],
                  out_hidden_size=size["hidden_size"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=56, fullatt_block_indexes=[size["vision_depth"] - 1],
                  initializer_range=size["initializer_range"])
    return _finish_qwen(Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLProcessor,
                        Qwen2VLVideoProcessor, tok, seed, size, _text(tok, size), vision, patch=14)


def build_qwen3_vl(tok, seed: int, size: dict):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    head_dim = size["hidden_size"] // size["num_attention_heads"]
    text = _text(tok, size, head_dim=head_dim, rope={"mrope_interleaved": True})
    side = int(size["max_pixels"] ** 0.5) // 16  # patches per side of the largest image
    vision = dict(depth=size["vision_depth"], hidden_size=size["vision_hidden_size"],
                  intermediate_size=2 * size["vision_hidden_size"], num_heads=size["vision_heads"],
                  out_hidden_size=size["hidden_size"], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=max(side, 4) ** 2, deepstack_visual_indexes=[0],
                  initializer_range=size["initializer_range"])
    return _finish_qwen(Qwen3VLForConditionalGeneration, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor, tok,
                        seed, size, text, vision, patch=16)
