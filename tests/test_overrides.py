"""What `MMR1Trainer` relies on inside TRL's `GRPOTrainer` and transformers' `Trainer` is still there, as it was when
the overrides were written. Private methods can change in any release; this file runs in both tested sets
(`make test`: transformers 5.23, `make test-vllm`: transformers 5.17), so a release that moves one fails here, by
name, instead of somewhere deep inside a training step.
"""

import inspect

import pytest
import torch
from transformers import Trainer
from trl.trainer.utils import RepeatSampler

from mmr1kit.trainer import MMR1Trainer

EMPTY = inspect.Parameter.empty
# The signature in TRL / transformers of every method that MMR1Trainer or a mixin of mmr1kit's overrides: (name,
# default) per parameter after `self`. The overrides pass these on (by position or by keyword), and mmr1kit.scale
# calls `_get_per_token_logps_and_entropies` with the multimodal keywords. `_tokenize_prompts` and `compute_loss`:
# overridden by mmr1kit's video mixin.
OVERRIDDEN = {
    "_load_from_checkpoint": [("resume_from_checkpoint", EMPTY), ("model", None)],
    "train": [("resume_from_checkpoint", None), ("trial", None), ("ignore_keys_for_eval", None)],
    "_get_train_sampler": [("dataset", None)],
    "_generate_single_turn": [("prompt_ids", EMPTY), ("images", EMPTY), ("multimodal_fields", EMPTY),
                              ("num_generations", EMPTY), ("has_tool_images", False)],
    "_generate": [("prompts", EMPTY)],
    "_calculate_rewards": [("inputs", EMPTY), ("prompts", EMPTY), ("completions", EMPTY),
                           ("completion_ids_list", EMPTY)],
    "training_step": [("model", EMPTY), ("inputs", EMPTY), ("num_items_in_batch", EMPTY)],
    "_get_per_token_logps_and_entropies": [
        ("model", EMPTY), ("input_ids", EMPTY), ("attention_mask", EMPTY), ("logits_to_keep", EMPTY),
        ("batch_size", None), ("compute_entropy", False), ("compute_aux_loss", False), ("pixel_values", None),
        ("image_grid_thw", None), ("num_images", None), ("pixel_attention_mask", None), ("spatial_shapes", None),
        ("num_tiles", None), ("image_sizes", None), ("token_type_ids", None), ("mm_token_type_ids", None),
        ("image_position_ids", None)],
    "_compute_loss": [("model", EMPTY), ("inputs", EMPTY)],
    "compute_loss": [("model", EMPTY), ("inputs", EMPTY), ("return_outputs", False), ("num_items_in_batch", None)],
    "_generate_and_score_completions": [("inputs", EMPTY)],
    "_tokenize_prompts": [("prompts", EMPTY)],
}
OURS = [k for k in MMR1Trainer.__mro__ if k.__module__.startswith("mmr1kit")]  # MMR1Trainer and its mixins


def _base(name):
    """The first class outside mmr1kit (TRL's GRPOTrainer, transformers' Trainer, ...) that defines `name`."""
    return next((k for k in MMR1Trainer.__mro__ if k not in OURS and name in k.__dict__), None)


def test_every_override_is_listed_here():
    """A new override must be added to OVERRIDDEN, so that its base is watched too."""
    overrides = {n for k in OURS for n, v in k.__dict__.items()
                 if inspect.isfunction(v) and not n.startswith("__") and _base(n) is not None}
    assert overrides - set(OVERRIDDEN) == set()


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_base_method_keeps_its_signature(name):
    base = _base(name)
    assert base is not None, f"{name} is no longer defined by GRPOTrainer or Trainer: mmr1kit's override is dead"
    parameters = list(inspect.signature(base.__dict__[name]).parameters.values())[1:]
    assert [(p.name, p.default) for p in parameters] == OVERRIDDEN[name], f"{base.__module__}.{base.__name__}.{name}"


def test_repeat_sampler_takes_the_arguments_ordered_sampling_passes():
    parameters = list(inspect.signature(RepeatSampler.__init__).parameters)[1:]
    assert parameters[:4] == ["data_source", "mini_repeat_count", "batch_size", "repeat_count"]
    assert {"shuffle", "seed"} <= set(parameters)


def test_the_private_state_mmr1trainer_reads_is_there(qwen_path, counting_dir, tmp_path):
    """The attributes the overrides read and write, on a real trainer (tiny model), and the temperature cell of TRL's
    fused LM head that `set_temperature` rewrites."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset

    config = MMR1Config.from_dict(dict(run_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4,
                                       num_generations=4, max_completion_length=4, report_to="none",
                                       save_strategy="no", beta=0.04))
    trainer = MMR1Trainer(model=str(qwen_path), args=config, train_dataset=load_dataset(counting_dir, "train", config),
                          record=False)
    assert set(trainer._metrics) == {"train", "eval"} and trainer._metrics["train"]["x"] == []  # defaultdict(list)
    assert {"rewards", "advantages", "completion"} <= set(trainer._logs)
    assert isinstance(trainer._step, int)
    # set by Trainer's training loop (read by training_step and _aggregate): not there before train()
    assert "self.current_gradient_accumulation_steps =" in inspect.getsource(inspect.getmodule(Trainer))
    assert isinstance(trainer.reward_weights, torch.Tensor) and len(trainer.reward_func_names) == len(
        trainer.reward_weights)
    for attribute in ("eos_token_ids", "loss_type", "num_generations", "max_completion_length", "num_iterations",
                      "beta", "temperature", "use_vllm", "_is_vlm", "ref_model", "generation_config"):
        assert hasattr(trainer, attribute), attribute
    assert trainer._is_vlm and trainer.ref_model is not None
    for model in (trainer.model, trainer.ref_model):
        code = model.forward.__func__.__code__
        assert "temperature" in code.co_freevars, "TRL's fused LM head no longer closes over `temperature`"
    trainer.set_temperature(0.5)
    forward = trainer.model.forward.__func__
    assert forward.__closure__[forward.__code__.co_freevars.index("temperature")].cell_contents == 0.5
