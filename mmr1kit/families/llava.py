"""Tiny LLaVA (CLIP tower, Qwen2 decoder; MMR1's quick start trained LLaVA-1.5) and InternVL (InternViT, Qwen2).

Both have a fixed-resolution vision tower (a square input of `sqrt(max_pixels)` floored to the patch) and render an
image part of the chat as one placeholder that the processor expands to the image's tokens.
"""

from mmr1kit.families.common import chatml, finish, text_dims, token_ids, vision_side

LLAVA_TOKENS = ["<image>"]
# LLaVA renders an image part as "<image>"; ChatML turns keep one tokenizer for LLaVA and the Qwen families.
LLAVA_CHAT_TEMPLATE = chatml("<image>\n")

INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
INTERNVL_NAMED = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                  "video_token": "<video>"}
# InternVL's own template renders an image part as "<IMG_CONTEXT>\n"; the processor wraps it in <img>...</img>.
INTERNVL_CHAT_TEMPLATE = chatml("<IMG_CONTEXT>\n", "<video>\n")


def _vision(size: dict, side: int, **extra) -> dict:
    return dict(hidden_size=size["vision_hidden_size"], intermediate_size=2 * size["vision_hidden_size"],
                num_hidden_layers=size["vision_depth"], num_attention_heads=size["vision_heads"],
                initializer_range=size["initializer_range"], **extra, image_size=side)


def build_llava(tok, seed: int, size: dict):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )

    side = vision_side(size, 14)  # CLIP takes a fixed square input
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision(size, side, patch_size=14)),
        text_config=Qwen2Config(**text_dims(tok, size, eos="<|im_end|>", pad="<|endoftext|>")),
        image_token_index=token_ids(tok, ["<image>"])["<image>"], vision_feature_select_strategy="default",
        vision_feature_layer=-1, initializer_range=size["initializer_range"])
    model = finish(LlavaForConditionalGeneration, config, tok, seed, eos=["<|im_end|>", "<|endoftext|>"],
                   pad="<|endoftext|>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                         do_center_crop=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=LLAVA_CHAT_TEMPLATE,
                               image_token="<image>", num_additional_image_tokens=1)
    return model, processor


def build_internvl(tok, seed: int, size: dict):
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        Qwen2Config,
    )
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    side = vision_side(size, 28)  # the pixel shuffle halves the 14 px patch grid: a multiple of 28
    seq = (side // 14) ** 2 // 4
    vision = InternVLVisionConfig(**_vision(size, [side, side], patch_size=[14, 14]))
    text = Qwen2Config(**text_dims(tok, size, eos="<|im_end|>", pad="<|endoftext|>"), tie_word_embeddings=False)
    config = InternVLConfig(vision_config=vision, text_config=text, downsample_ratio=0.5, image_seq_length=seq,
                            image_token_id=token_ids(tok, ["<IMG_CONTEXT>"])["<IMG_CONTEXT>"],
                            tie_word_embeddings=False)
    model = finish(InternVLForConditionalGeneration, config, tok, seed, eos=["<|im_end|>", "<|endoftext|>"],
                   pad="<|endoftext|>")
    # InternVL tiles images (its processor crops to patches by default, and TRL counts the tiles): at most 2 here.
    image_processor = GotOcr2ImageProcessorPil(size={"height": side, "width": side}, min_patches=1, max_patches=2)
    video_processor = InternVLVideoProcessor(size={"height": side, "width": side})
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                  image_seq_length=seq, chat_template=INTERNVL_CHAT_TEMPLATE)
    return model, processor
