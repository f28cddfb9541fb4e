"""Tiny Gemma 3 and Idefics3 / SmolVLM: SigLIP-style towers with a fixed square input, their own chat formats.

- Gemma 3: `<start_of_turn>user ... <end_of_turn>` turns, an image is `<start_of_image>` expanded by the processor
  to `mm_tokens_per_image` soft tokens; images attend bidirectionally (`token_type_ids`).
- Idefics3 / SmolVLM: `User:` / `Assistant:` turns ended by `<end_of_utterance>`, an image is `<image>` expanded to
  `<fake_token_around_image><global-img><image>*n<fake_token_around_image>`; image splitting is off (one tile).
"""

from mmr1kit.families.common import finish, text_dims, token_ids, vision_side

GEMMA3_TOKENS = ["<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                 "<image_soft_token>"]
GEMMA3_NAMED = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
# Gemma 3's template: the system text is put in front of the first user turn, "assistant" is called "model".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set first_user_prefix = '' %}{% set loop_messages = messages %}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}{% endif %}"
    "{% for message in loop_messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ first_user_prefix if loop.first else '' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>",
                   *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]
# SmolVLM's template (Idefics3 uses the same turns): "User:<image>question<end_of_utterance>\nAssistant:".
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _siglip(size: dict, side: int, patch: int) -> dict:
    return dict(hidden_size=size["vision_hidden_size"], intermediate_size=2 * size["vision_hidden_size"],
                num_hidden_layers=size["vision_depth"], num_attention_heads=size["vision_heads"], image_size=side,
                patch_size=patch, initializer_range=size["initializer_range"])


def build_gemma3(tok, seed: int, size: dict):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    side = vision_side(size, 28)  # 8x8 patches of 14 px at 112 px, pooled 2x2 to 16 image tokens
    tokens = (side // 28) ** 2
    ids = token_ids(tok, GEMMA3_TOKENS)
    n_layers = size["num_hidden_layers"]
    text = Gemma3TextConfig(**text_dims(tok, size, eos="<end_of_turn>", pad="<|endoftext|>", bos="<bos>"),
                            head_dim=size["hidden_size"] // size["num_attention_heads"], sliding_window=64,
                            layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"])
    config = Gemma3Config(text_config=text, vision_config=SiglipVisionConfig(**_siglip(size, side, 14)),
                          mm_tokens_per_image=tokens, boi_token_index=ids["<start_of_image>"],
                          eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
                          initializer_range=size["initializer_range"], tie_word_embeddings=True)
    model = finish(Gemma3ForConditionalGeneration, config, tok, seed, eos=["<end_of_turn>", "<|endoftext|>"],
                   pad="<|endoftext|>")
    image_processor = Gemma3ImageProcessorPil(size={"height": side, "width": side})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=tokens,
                                chat_template=GEMMA3_CHAT_TEMPLATE)
    return model, processor


def _idefics3_like(tok, seed: int, size: dict, config_class, model_class, processor_class, image_class, **extra):
    side = vision_side(size, 28)
    seq = (side // 14) ** 2 // 4  # scale_factor 2: the pixel shuffle merges 2x2 patches
    text = text_dims(tok, size, eos="<end_of_utterance>", pad="<|endoftext|>")
    config = config_class(vision_config=_siglip(size, side, 14), text_config={"model_type": "llama", **text},
                          scale_factor=2, image_token_id=token_ids(tok, ["<image>"])["<image>"],
                          pad_token_id=text["pad_token_id"], tie_word_embeddings=False)
    model = finish(model_class, config, tok, seed, eos=["<end_of_utterance>", "<|endoftext|>"], pad="<|endoftext|>")
    image_processor = image_class(size={"longest_edge": side}, max_image_size={"longest_edge": side},
                                  do_image_splitting=False)
    processor = processor_class(image_processor=image_processor, tokenizer=tok, image_seq_len=seq,
                                chat_template=IDEFICS3_CHAT_TEMPLATE, **extra)
    return model, processor


def build_idefics3(tok, seed: int, size: dict):
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    return _idefics3_like(tok, seed, size, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor,
                          Idefics3ImageProcessorPil)


def build_smolvlm(tok, seed: int, size: dict):
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    side = vision_side(size, 28)
    video = SmolVLMVideoProcessor(size={"longest_edge": side}, max_image_size={"longest_edge": side})
    return _idefics3_like(tok, seed, size, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor,
                          SmolVLMImageProcessorPil, video_processor=video)
