"""`MMR1Config`: the one config object of a run (design decision 2).

It subclasses `trl.GRPOConfig`, so every TRL knob (loss type, clipping, vLLM, batching) keeps its TRL name, and adds
MMR1's knobs with MMR1's names plus the run's own fields. Defaults are sized for a CPU smoke run on the tiny model.
Every field and every cross-field rule is checked in `__post_init__`, before any model loads, and errors name the
field. Build it from a dict (papermill parameters), a YAML preset, or the command line.
"""

import difflib
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml
from trl import GRPOConfig

from mmr1kit import advantages, ledger, signal
from mmr1kit.config_checks import check_fields, parse_argv, unknown_names
from mmr1kit.data.ordering import ORDERS
from mmr1kit.presets import warn_smoke_sizes
from mmr1kit.scale import check_layout
from mmr1kit.schedules import TEMPERATURE_FUNCS

KL_APPROXIMATORS = ("k1", "k2", "k3", "exact", "kimifull")
KL_ALIASES = {"kimikl": "k2", "kimi": "k2", "fullkimi": "kimifull"}  # MMR1's spellings (README and code disagreed)
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16's _compute_loss


def _use_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


@dataclass
class MMR1Config(GRPOConfig):
    r"""
    Configuration of an mmr1kit GRPO run: `trl.GRPOConfig` plus MMR1's knobs and the run's own fields.

    > Parameters of the run:

    model_name_or_path (`str`, defaults to `"tiny"`): A checkpoint path or hub id, or `"tiny"` / `"tiny-<family>"`
        (`"tiny-llava"`, `"tiny-qwen3_vl"`, `"tiny-gemma3"`, ...: README, "Model families") for mmr1kit's offline
        tiny models (built once, then cached).
    dataset (`str`, defaults to `"data_cards/synthetic_counting.md"`): A data card, JSON / JSONL file or folder.
    run_dir (`str`, defaults to `"runs/default"`): The run folder; `output_dir` defaults to `<run_dir>/checkpoints`.
    capsule_every (`int`, defaults to `0`): Every N steps and at the last step, keep the step's batch with the weights
        and optimizer state its loss used, for `mmr1kit replay` (`docs/objective_lab.md`); 0 keeps none.

    > MMR1's parameters (same names, see `docs/metrics.md` for the formulas):

    use_kl, kl_approximator, entropy_reg, entropy_weight, temperature_func, temperature_begin, temperature_end,
    order_dataset, reward_funcs, reward_scale, no_mean_for_same_reward, train_sample_size, system_prompt_template,
    question_template, answer_template, min_pixels, max_pixels; and `image_root` for MMR1's JSON files.

    > TRL defaults changed to MMR1's objective (`docs/objective.md`, "Reproducing an MMR1 run"):

    use_bias_correction_kl (`bool`, defaults to `False`; TRL: `True`): with `True`, TRL multiplies its k3 term by the
        importance ratio `exp(logp - sg(logp))`, which makes k3's gradient the unbiased reverse-KL gradient
        `(logp - ref) * grad logp`, i.e. k2's; MMR1's k3 gradient is `(1 - exp(ref - logp)) * grad logp`. It applies
        to `kl_approximator="k3"` only.
    """

    # Run
    model_name_or_path: str = field(default="tiny", metadata={"help": "Checkpoint path / hub id, or 'tiny'."})
    dataset: str = field(default="data_cards/synthetic_counting.md", metadata={"help": "Card, file or folder."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split used for evaluation."})
    run_dir: str = field(default="runs/default", metadata={"help": "Run folder (records, checkpoints, report)."})
    on_bad_example: str = field(default="error", metadata={"help": "'error' or 'skip' bad dataset rows."})
    max_nonfinite_steps: int = field(
        default=3, metadata={"help": "Stop (with a checkpoint) after this many consecutive non-finite steps; 0: never."}
    )
    overwrite_run_dir: bool = field(
        default=False, metadata={"help": "Move an existing run in run_dir aside (to <run_dir>.old-<time>) and start afresh."}
    )
    allow_changes: list[str] = field(
        default_factory=list, metadata={"help": "On resume: fields that may differ from the run's config.json."}
    )
    capsule_every: int = field(
        default=0,
        metadata={"help": "Keep one step's batch, weights and optimizer state every N steps and at the last step, "
                          "for `mmr1kit replay` (0: never; mmr1kit.capsules)."},
    )

    # MMR1: KL
    use_kl: bool = field(default=True, metadata={"help": "Add beta * KL to the loss (KL is logged either way)."})
    kl_approximator: str = field(
        default="k3", metadata={"help": "KL in the loss: k1, k2 (kimikl), k3, exact, kimifull (fullkimi)."}
    )
    use_bias_correction_kl: bool = field(
        default=False,
        metadata={"help": "TRL's k3 term times the importance ratio: its gradient becomes k2's (TRL defaults to True)."},
    )
    exact_kl_every: int = field(
        default=1, metadata={"help": "Log kl/exact and the reference entropy every N steps (0: never)."}
    )
    # Rollout engine (vLLM) consistency check
    rollout_check_every: int = field(
        default=1, metadata={"help": "Compare the rollout engine's log-probs with the trainer's every N steps (0: off)."}
    )
    rollout_check_threshold: float = field(
        default=0.05, metadata={"help": "Warn when the mean per-token log-prob difference exceeds this (nats)."}
    )
    # Repeated image work (mmr1kit.vision_cache)
    encode_images_once: bool = field(
        default=True,
        metadata={"help": "Preprocess each distinct image once per step and encode it once per forward pass, shared "
                          "by the completions of its group (exact); False: TRL's path, once per completion."},
    )
    # LoRA (TRL ModelConfig names); the reference is then the policy with its adapters disabled
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Modules to adapt (all-linear)."})
    # MMR1: entropy
    entropy_reg: bool = field(default=False, metadata={"help": "Add entropy_weight * (-H) to the loss."})
    entropy_weight: float = field(
        default=0.01, metadata={"help": "Positive pushes entropy up, negative down (MMR1's sign convention)."}
    )
    # MMR1: sampling temperature schedule
    temperature_func: str = field(default="constant", metadata={"help": "constant, linear or cosine."})
    temperature_begin: float = field(default=0.1, metadata={"help": "Temperature at step 0 (linear / cosine)."})
    temperature_end: float = field(default=1.0, metadata={"help": "Temperature at the last step (linear / cosine)."})
    # MMR1: data
    order_dataset: str = field(
        default="random", metadata={"help": "random, sequential, curriculum or reverse_curriculum."}
    )
    train_sample_size: int | None = field(
        default=None, metadata={"help": "Seeded random subset of the train split (held-out splits stay whole)."}
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths start from (default: the JSON's folder)."}
    )
    system_prompt_template: str = field(default="default", metadata={"help": "Template key or literal prompt."})
    question_template: str = field(default="default", metadata={"help": "Template key or text with {question}."})
    answer_template: str = field(default="default", metadata={"help": "Template key or text with {answer}."})
    min_pixels: int = field(default=56 * 56, metadata={"help": "Lower bound of image pixels after resizing."})
    max_pixels: int = field(default=112 * 112, metadata={"help": "Upper bound of image pixels after resizing."})
    # MMR1: rewards and advantages
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"], metadata={"help": "Names in mmr1kit.rewards.REWARDS."}
    )
    reward_scale: float = field(default=1.0, metadata={"help": "Multiplies the summed reward before the advantage."})
    no_mean_for_same_reward: bool = field(
        default=False, metadata={"help": "Do not centre groups whose rewards are all equal; clip advantages to [-1, 1]."}
    )
    # Where the learning signal goes (mmr1kit.signal, mmr1kit.ledger; docs/signal.md)
    dynamic_sampling: str = field(
        default="none", metadata={"help": "Groups without signal: none (train all), filter (drop) or replace (redraw)."}
    )
    filter_key: str | None = field(
        default=None, metadata={"help": "Reward whose group mean decides (default: first of reward_funcs; 'overall')."}
    )
    filter_low: float = field(default=0.01, metadata={"help": "A group has signal when filter_low < its mean ..."})
    filter_high: float = field(default=0.99, metadata={"help": "... < filter_high (EasyR1's names and defaults)."})
    max_tries: int = field(default=20, metadata={"help": "Generation rounds per batch with dynamic_sampling='replace'."})
    kl_in_reward: str | None = field(
        default=None, metadata={"help": "Subtract beta * sum_t KL_t (k1, k2, k3 or exact) from each reward (verl)."}
    )
    soft_punish_cache: int = field(
        default=4, metadata={"help": "The 'soft_overlong' reward's penalty ramp, in tokens (TRL's soft_punish_cache)."}
    )
    freeze_vision_tower: bool = field(default=False, metadata={"help": "Do not train the vision encoder."})

    # TRL defaults changed for a CPU smoke run on the tiny model (TRL's are sized for GPUs).
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to <run_dir>/checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, sampling and initialisation."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Tiny models need far more than TRL's 1e-6."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "LR schedule."})
    warmup_steps: float = field(default=5, metadata={"help": "Linear warm-up steps."})
    max_steps: int = field(default=20, metadata={"help": "Optimizer steps."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Completions (not prompts) per device."})
    num_generations: int | None = field(default=4, metadata={"help": "Completions per prompt (the group size G)."})
    max_completion_length: int | None = field(default=16, metadata={"help": "Max new tokens per completion."})
    loss_type: str = field(default="grpo", metadata={"help": "TRL loss type; MMR1 used grpo."})
    beta: float = field(default=0.04, metadata={"help": "KL weight; 0 means no reference model and no KL logs."})
    logging_steps: float = field(default=1, metadata={"help": "Log every step."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpointing strategy."})
    save_steps: float = field(default=50, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "Trackers beside the run record: tensorboard, trackio, wandb, none."}
    )
    # Trackers (mmr1kit.trackers, docs/trackers.md): metrics.jsonl's names and steps, and a throttled rollout table
    project: str = field(default="mmr1kit", metadata={"help": "The trackers' project (wandb: unless WANDB_PROJECT)."})
    tracker_rollouts_every: int = field(
        default=10, metadata={"help": "Send a rollout table to the trackers at step 1, then every N steps (0: never)."}
    )
    tracker_rollouts_max_rows: int = field(
        default=16, metadata={"help": "Rows of a rollout table at most (the step's first rows: whole groups first)."}
    )
    bf16: bool = field(default=False, metadata={"help": "bf16 is 5x slower on CPU."})
    gradient_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations (GPU memory)."})
    use_cpu: bool = field(default_factory=_use_cpu, metadata={"help": "Train on the CPU (auto: no CUDA)."})

    def __post_init__(self):
        check_fields(self)  # mmr1kit.config_checks: types and ranges of every field, one line per bad field
        self._check_fields()
        if self.output_dir is None:
            self.output_dir = str(Path(self.run_dir) / "checkpoints")
        # transformers 5.23 renamed gradient_checkpointing to activation_checkpointing and warns (FutureWarning) on the
        # old name whenever the new one is unset; MMR1, TRL and our presets use the old name, so it is mapped across.
        # transformers 5.17 (the GPU set) has only the old name.
        if getattr(self, "activation_checkpointing", False) is None:
            self.activation_checkpointing = bool(self.gradient_checkpointing)
        try:
            super().__post_init__()
        except ValueError as e:
            raise ValueError(f"MMR1Config: {e}") from None
        warn_smoke_sizes(self)  # a real model with the CPU smoke-run sizes: one warning naming the GPU preset

    def _check_fields(self):
        def bad(name, message):
            raise ValueError(f"MMR1Config.{name}={getattr(self, name)!r}: {message}")

        self.kl_approximator = KL_ALIASES.get(self.kl_approximator, self.kl_approximator)
        if self.kl_approximator not in KL_APPROXIMATORS:
            bad("kl_approximator", f"expected one of {KL_APPROXIMATORS} or MMR1's aliases {sorted(KL_ALIASES)}")
        if self.temperature_func not in TEMPERATURE_FUNCS:
            bad("temperature_func", f"expected one of {TEMPERATURE_FUNCS}")
        for name in ("temperature_begin", "temperature_end", "temperature"):
            if not getattr(self, name) > 0:
                bad(name, "a sampling temperature must be > 0")
        if self.loss_type not in LOSS_TYPES:
            bad("loss_type", f"expected one of {LOSS_TYPES} (TRL 1.16's loss types)")
        self.scale_rewards = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        self.kl_in_reward = None if str(self.kl_in_reward).lower() in ("none", "") else self.kl_in_reward
        error = advantages.config_error(self)  # scale_rewards, aggregation, no_mean_for_same_reward, kimifull, KL
        if error:
            bad(*error)
        from mmr1kit import trackers

        error = trackers.config_error(self)  # report_to: installed, folders writable, before anything loads
        if error:
            bad(*error)
        if self.use_peft and (self.kl_approximator == "exact" or self.exact_kl_every):
            if self.kl_approximator == "exact":
                bad("kl_approximator", "the exact KL needs a separate reference model; with use_peft use k1, k2 or k3")
            self.exact_kl_every = 0  # no separate reference model: kl/exact is not available with LoRA
        if self.rollout_check_every < 0 or self.rollout_check_threshold <= 0:
            bad("rollout_check_every", "needs rollout_check_every >= 0 and rollout_check_threshold > 0")
        if self.exact_kl_every < 0:
            bad("exact_kl_every", "must be >= 0 (0 turns the exact KL off)")
        if self.order_dataset not in ORDERS:
            bad("order_dataset", f"expected one of {ORDERS}")
        if self.on_bad_example not in ("error", "skip"):
            bad("on_bad_example", "expected 'error' or 'skip'")
        if self.train_sample_size is not None and self.train_sample_size < 1:
            bad("train_sample_size", "must be a positive number of rows (or None for all)")
        if not 0 < self.min_pixels <= self.max_pixels:
            bad("min_pixels", f"need 0 < min_pixels <= max_pixels (max_pixels={self.max_pixels})")
        if self.beta < 0:
            bad("beta", "must be >= 0")
        if self.use_kl and self.beta == 0 and self.kl_approximator != "k3":
            bad("beta", f"use_kl with kl_approximator={self.kl_approximator!r} needs beta > 0 (the KL weight)")
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [r.strip() for r in self.reward_funcs.split(",") if r.strip()]
        if not self.reward_funcs:
            bad("reward_funcs", "at least one reward function is needed")
        from mmr1kit.rewards import get_reward_funcs

        try:
            get_reward_funcs(self.reward_funcs)
        except ValueError as e:
            bad("reward_funcs", str(e))
        from mmr1kit.data import templates

        for name in ("system_prompt_template", "question_template", "answer_template"):
            try:
                templates.resolve(name, getattr(self, name))
            except ValueError as e:
                bad(name, str(e))
        if self.num_generations < 2:
            bad("num_generations", "GRPO needs at least 2 completions per prompt")
        if "soft_overlong" in self.reward_funcs and not 0 < self.soft_punish_cache <= self.max_completion_length:
            bad("soft_punish_cache", f"the soft_overlong ramp is 1..max_completion_length={self.max_completion_length}")
        for check in (signal.config_error, ledger.resume_error):
            error = check(self)  # dynamic sampling; an online order resuming without a ledger
            if error:
                bad(*error)
        check_layout(self)  # mmr1kit.scale: impossible scale-out layouts, before any model loads
        world = int(os.environ.get("WORLD_SIZE", 1))
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        per_step = self.generation_batch_size or self.per_device_train_batch_size * world * steps
        if per_step % self.num_generations:
            g = self.num_generations
            batch = next(b for b in range(self.per_device_train_batch_size, self.per_device_train_batch_size + g + 1)
                         if (b * world * steps) % g == 0)
            valid = [d for d in range(2, per_step + 1) if per_step % d == 0]
            bad(
                "num_generations",
                f"the global number of completions per generation step ({per_step} = per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x {world} process(es) x {steps} step(s) per generation) must be "
                f"divisible by num_generations; use per_device_train_batch_size={batch}, or num_generations in {valid}",
            )

    # --- constructors -------------------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls) if f.init}

    @classmethod
    def from_dict(cls, values: dict) -> "MMR1Config":
        """Build from a flat dict (papermill parameters, a YAML preset); unknown names raise `ValueError`."""
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            hints = {u: difflib.get_close_matches(u, cls.field_names(), n=2) for u in unknown}
            said = "; ".join(f"{u!r}" + (f" (did you mean {' or '.join(h)}?)" if h else "") for u, h in hints.items())
            raise ValueError(f"MMR1Config: unknown field(s) {said}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path, **overrides) -> "MMR1Config":
        """Build from a YAML preset (a flat mapping of field names), with keyword overrides on top."""
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a preset is a mapping of MMR1Config fields, got {type(values).__name__}")
        values.pop("base", None)
        return cls.from_dict({**values, **overrides})

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> "MMR1Config":
        """Build from the command line: `[PRESET.yaml] [--field value ...]`, values converted as a preset's are."""
        return cls.from_dict(cls.values_from_args(argv))

    @classmethod
    def values_from_args(cls, argv: list[str] | None = None) -> dict:
        """The values `[PRESET.yaml] [--field value ...]` sets (the preset's, then the command line's), unchecked."""
        argv = list(argv or [])
        values = {}
        if argv and argv[0].endswith((".yaml", ".yml")):
            preset = argv.pop(0)
            values = yaml.safe_load(Path(preset).read_text()) or {}
            if not isinstance(values, dict):
                raise ValueError(f"{preset}: a preset is a mapping of MMR1Config fields, got {type(values).__name__}")
            values.pop("base", None)
            unknown = unknown_names(values, cls.field_names())
            if unknown:
                raise ValueError(f"MMR1Config: unknown field(s) in preset {preset}: {unknown}")
        return {**values, **parse_argv(argv, cls.field_names())}

    def to_dict(self) -> dict:
        """The resolved config as plain JSON-able values (written to the run folder)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_token") or f.name.startswith("_"):
                continue
            if is_dataclass(value):  # accelerator_config: a dict reads back, its repr would not
                value = asdict(value)
            out[f.name] = value if isinstance(value, (int, float, str, bool, list, dict, type(None))) else str(value)
        return out
