"""The activation coefficients of `mmr1kit.memory_model`, re-counted: a `saved_tensors_hooks` pack hook records every
tensor a real decoder layer / vision block keeps for backward, in fp32, under bf16 autocast and in pure bf16."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from mmr1kit import memory_model
from mmr1kit.architecture import read_architecture

ROWS, SEQ = 3, 40  # B * S = 120: no activation shape collides with a weight's


def saved_bytes(module, run, exclude, autocast: bool) -> int:
    """Bytes of the distinct storages `run()` saves for backward, parameters and `exclude` left out."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()} | {
        t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        run()
    return sum(seen.values())


def workload(mode: str, **shape) -> memory_model.Workload:
    return memory_model.Workload(**{
        "batch": ROWS, "generation_batch": ROWS, "accumulation": 1, "prompt_tokens": SEQ, "image_patches": 1,
        "completion_tokens": 0, "mode": mode, "param_bytes": 2 if mode == "bf16" else 4, "ref_bytes": 4,
        "gradient_checkpointing": False, "eager_attention": False, "reference": True, "trainable": 1, "gpus": 1,
        "zero": 0, "offload": False, "device": "cpu", "hf_generate": True, "old_logps": False, **shape})


def small(path, **text):
    config = AutoConfig.from_pretrained(path)
    for key, value in text.items():
        setattr(config.get_text_config(), key, value)
    config.text_config.layer_types = ["full_attention"] * config.text_config.num_hidden_layers
    return config


MODES = ("fp32", "autocast", "bf16")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hidden, inter, heads, kv", [(256, 704, 4, 2), (384, 704, 6, 6)])
def test_decoder_layer_saves_what_the_formula_says(qwen_path, mode, hidden, inter, heads, kv):
    config = small(qwen_path, hidden_size=hidden, intermediate_size=inter, num_attention_heads=heads,
                   num_key_value_heads=kv, num_hidden_layers=1, head_dim=hidden // heads)
    half = hidden // heads // 2
    config.text_config.rope_parameters["mrope_section"] = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    config.vision_config.out_hidden_size = hidden
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    model = AutoModelForImageTextToText.from_config(config).to(dtype).train()
    lm = model.model.language_model
    lm.config._attn_implementation = "sdpa"
    x = torch.randn(ROWS, SEQ, hidden, dtype=dtype, requires_grad=True)
    position = lm.rotary_emb(x, torch.arange(SEQ).expand(3, ROWS, SEQ))
    got = saved_bytes(model, lambda: lm.layers[0](x, attention_mask=None, position_embeddings=position),
                      [*position], autocast=mode == "autocast")
    if mode == "autocast":
        got -= 2 * sum(p.numel() for p in lm.layers[0].parameters() if p.dim() == 2)  # its bf16 weight copies
    arch = read_architecture(str(qwen_path))
    arch = type(arch)(**{**arch.__dict__, "hidden": hidden, "intermediate": inter, "heads": heads, "kv_heads": kv,
                         "head_dim": hidden // heads})
    expected = memory_model.layer_saved_per_token(arch, workload(mode), SEQ) * ROWS * SEQ  # the input x included
    assert got == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("mode", MODES)
def test_vision_block_saves_what_the_formula_says(qwen_path, mode):
    config = AutoConfig.from_pretrained(qwen_path)
    vision = config.vision_config
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    per_block = []
    for depth in (2, 3):  # the difference is one block, without the patch embedding and the merger
        vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads = depth, 128, 352, 2
        vision.fullatt_block_indexes = [depth - 1]
        model = AutoModelForImageTextToText.from_config(config).to(dtype).train()
        grid = torch.tensor([[1, 8, 12]] * 2)
        pixels = torch.randn(2 * 96, 3 * 2 * 14 * 14, dtype=dtype)
        got = saved_bytes(model, lambda m=model, x=pixels, g=grid: m.model.visual(x, grid_thw=g), [pixels],
                          autocast=mode == "autocast")
        if mode == "autocast":
            got -= 2 * sum(p.numel() for p in model.model.visual.parameters() if p.dim() >= 2)
        per_block.append(got)
    arch = read_architecture(str(qwen_path))
    arch = type(arch)(**{**arch.__dict__, "vision_hidden": 128, "vision_intermediate": 352})
    expected = memory_model.vision_saved_per_patch(arch, workload(mode)) * 2 * 96
    assert per_block[1] - per_block[0] == pytest.approx(expected, rel=0.03)


def test_checkpointing_keeps_each_layers_input_only(qwen_path):
    config = small(qwen_path, num_hidden_layers=3)
    model = AutoModelForImageTextToText.from_config(config).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 500, (ROWS, SEQ))
    full = saved_bytes(model, lambda: model.model.language_model(input_ids=ids, use_cache=False), [], False)
    hidden = config.text_config.hidden_size
    # each layer's input, and the final norm's input and normalised output (its scaled output goes to the LM head)
    assert full == pytest.approx((3 + 2) * ROWS * SEQ * hidden * 4, rel=0.03)
