"""`MMR1Trainer`: TRL's `GRPOTrainer` plus MMR1's objective, sampling schedule, dataset order and the run record.

It overrides as little as possible (design decision 1); each override says what it adds:

- `_get_per_token_logps_and_entropies`: keeps the policy pass's log-probs and entropies for the loss additions;
- `_compute_loss`: the KL estimator of `kl_approximator` (TRL hard-codes k3), the entropy term, every estimator logged;
- `_generate_and_score_completions`: dynamic sampling (`mmr1kit.signal`: one or more tries of `_score_round`, which
  adds MMR1's advantage variants and the KL in the reward), every rollout and the prompt ledger (`mmr1kit.ledger`)
  into the run folder;
- the generation, scoring, reference, rollout and training-step hooks: phase timing and peak memory
  (`mmr1kit.phases`);
- `_get_train_sampler`: `order_dataset` (`online` is drawn by `mmr1kit.signal`);
- `_load_from_checkpoint`: resuming restores every weight (transformers' own path misses VLM key renames);
- callbacks (`mmr1kit.callbacks`) set the step's sampling temperature everywhere TRL uses it and write the run
  record;
- `report_to`'s trackers get the run record's names and steps, and throttled rollout tables (`mmr1kit.trackers`);
- hooks into `mmr1kit.capsules` (`capsule_every`: a step's batch, weights and optimizer state for `mmr1kit replay`);
- hooks into `mmr1kit.sampling` (no vision token sampled; vLLM's importance ratio on one distribution) and, on vLLM's
  CPU platform, `mmr1kit.vllm_sync` (the weight sync through `reload_weights`);
- mixins: `mmr1kit.video` (video rows) and `mmr1kit.vision_cache` (each image preprocessed once per step and encoded
  once per forward pass, `encode_images_once`).

With every MMR1 option neutral (`kl_approximator="k3"`, no entropy term, `reward_scale=1`, constant temperature,
random order, `encode_images_once=False`) the loss and gradients are exactly TRL's: the k3 path is TRL's own code;
with `encode_images_once` on (the default) they equal TRL's to float rounding.
"""

import torch
from trl import GRPOTrainer

from mmr1kit import advantages as mmr1_advantages
from mmr1kit import capsules, kl
from mmr1kit.callbacks import RunRecordCallback, TemperatureCallback
from mmr1kit.data.ordering import OrderedRepeatSampler, prompt_order
from mmr1kit.guards import NonFiniteGuard, NonFiniteTrainingError
from mmr1kit.interrupt import raise_if_stopped, stop_on_interrupt
from mmr1kit.kl import capture_hidden
from mmr1kit.ledger import LedgerCallback, make_ledger
from mmr1kit.models import freeze_vision_tower, peft_base, resolve_model
from mmr1kit.phases import PhaseCallback, PhaseLog
from mmr1kit.progress import use_text_progress
from mmr1kit.rounds import round_record
from mmr1kit.run_folder import check_resume_step, open_record, resolve_resume, start_run
from mmr1kit.sampling import ProcessedLogprobs, set_fused_head_temperature, suppress_vision_tokens
from mmr1kit.scale import feed_vllm_unexpanded_images, rollout_check
from mmr1kit.signal import DynamicSampling
from mmr1kit.trackers import use_trackers
from mmr1kit.video import VideoTrainerMixin
from mmr1kit.vision_cache import VisionCacheMixin
from mmr1kit.vllm_sync import use_cpu_weight_sync

# Multimodal inputs TRL passes to the policy forward (see GRPOTrainer._compute_loss).
MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes", "token_type_ids",
                   "mm_token_type_ids", "image_position_ids")


class MMR1Trainer(VisionCacheMixin, VideoTrainerMixin, GRPOTrainer):
    """`trl.GRPOTrainer` with MMR1's options, configured by an `MMR1Config`.

    Args:
        model (`str` or `PreTrainedModel`, *optional*): Defaults to `args.model_name_or_path`. Pass a path (not an
            in-memory model) when `beta > 0`: TRL reloads the reference model from `config._name_or_path`.
        reward_funcs (*optional*): Defaults to `mmr1kit.rewards.get_reward_funcs(args.reward_funcs)`.
        args (`MMR1Config`): The run's config.
        train_dataset, eval_dataset: As returned by `mmr1kit.data.load_dataset`.
        record (`bool`, *optional*, defaults to `True`): Write the run folder `args.run_dir` (main process only).
        **kwargs: Passed on to `GRPOTrainer` (`processing_class`, `callbacks`, `peft_config`, ...).
    """

    def __init__(self, model=None, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None, record=True,
                 **kwargs):
        from mmr1kit.capabilities import check_dataset
        from mmr1kit.models import load_processor
        from mmr1kit.rewards import get_reward_funcs
        from mmr1kit.threads import pick_threads

        pick_threads(args.use_cpu)  # the notebook's thread count, for every entry point
        capsules.check(args, train_dataset)  # capsule_every where capsules cannot hold a step: refused first
        # one run per folder, and a resume that matches the run's record: checked before the model loads
        start = start_run(args) if record and args.process_index == 0 else None
        model = resolve_model(args.model_name_or_path) if model is None else model
        if isinstance(model, str) and "processing_class" not in kwargs:
            kwargs["processing_class"] = load_processor(model, args.min_pixels, args.max_pixels)
        reward_funcs = get_reward_funcs(args.reward_funcs, config=args) if reward_funcs is None else reward_funcs
        # several images / a video per row: drop or refuse the rows this model cannot take (mmr1kit.capabilities)
        train_dataset = check_dataset(train_dataset, kwargs.get("processing_class"), model, args)
        self._policy_pass = None  # (logps, entropies, hidden or None) of the last policy forward with entropies
        self._ref_hidden = None  # (B, T, H) of the last reference pass, when the exact KL will need it
        self._round_rewards = None  # (N, n_funcs) of the round being scored
        self.recorder = None
        self.processed_logprobs = ProcessedLogprobs(self)  # vLLM's IS ratio on one distribution (mmr1kit.sampling)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, **kwargs)
        # MMR1 multiplies the summed reward by reward_scale before the group statistics; per-function logs stay raw.
        self.reward_weights = self.reward_weights * args.reward_scale
        self.phases = PhaseLog(self.accelerator.device)  # timing/* and memory/peak_* of every optimizer step
        self.add_callback(PhaseCallback(self))
        suppress_vision_tokens(self)  # neither engine samples an image / video placeholder or vision marker
        if self.use_vllm:
            use_cpu_weight_sync(self.vllm_generation)  # vLLM's CPU platform: reload_weights (mmr1kit.vllm_sync)
            if self._is_vlm:  # huggingface/trl#6294: vLLM expands image placeholders itself
                feed_vllm_unexpanded_images(self.vllm_generation, self.processing_class.image_token_id)
        if start is not None and self.accelerator.is_main_process:
            self.recorder = open_record(args, start, model, train_dataset)
            self.add_callback(RunRecordCallback(self.recorder))
        self.rollout_tables = use_trackers(self)  # report_to: metrics.jsonl's names and steps; rollout tables
        self.capsules = capsules.attach(self)  # capsule_every: batches kept for `mmr1kit replay` (mmr1kit.capsules)
        self.ledger = make_ledger(self, train_dataset)  # prompts.jsonl; restored on resume by its callback
        self.add_callback(LedgerCallback(self))
        self.signal = DynamicSampling(self)
        if args.freeze_vision_tower:
            freeze_vision_tower(self.model)
        self.add_callback(TemperatureCallback(self))
        self.guard = NonFiniteGuard(self, args.max_nonfinite_steps)
        self.add_callback(self.guard)
        use_text_progress(self, "grpo")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Load a checkpoint's weights for resuming, with every key accounted for.

        transformers 5.23's `Trainer._load_from_checkpoint` reads `model.safetensors` with
        `load_state_dict(state_dict, strict=False)`, but `save_pretrained` writes vision-language models under their
        legacy key names (`model.embed_tokens.weight` for `model.language_model.embed_tokens.weight`, `visual.*`
        for `model.visual.*`): 56 of the tiny Qwen2.5-VL's 57 tensors silently kept their pre-resume values
        (huggingface/transformers#43701, open).
        `from_pretrained` maps the names; the copy is then loaded strictly. PEFT, FSDP and DeepSpeed checkpoints
        keep transformers' own path.
        """
        model = self.model if model is None else model
        target = self.accelerator.unwrap_model(model)
        if hasattr(target, "peft_config") or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`, resuming as `args.resume_from_checkpoint` says when not told otherwise.

        Raises `NonFiniteTrainingError` when the run stopped on non-finite steps, and `mmr1kit.interrupt.
        TrainingInterrupted` when Ctrl-C stopped it (at the end of a step, with a checkpoint of that step).
        """
        asked = self.args.resume_from_checkpoint if resume_from_checkpoint is None else resume_from_checkpoint
        resume_from_checkpoint = resolve_resume(asked, self.args.output_dir)  # None or one checkpoint folder
        check_resume_step(resume_from_checkpoint, self.args.max_steps)
        with stop_on_interrupt(self) as stop:
            output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self.guard.stopped:
            if self.recorder is not None:
                self.recorder.write_summary(stopped=self.guard.message())
            raise NonFiniteTrainingError(self.guard.message())
        raise_if_stopped(self, stop)
        return output

    # --- sampling temperature ------------------------------------------------------------------------------------

    def set_temperature(self, temperature: float) -> None:
        """Use `temperature` for sampling and for the log-probs / entropies of the loss (TRL divides logits by it)."""
        self.temperature = temperature
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.temperature = temperature
        if getattr(self, "generation_kwargs", None) is not None:
            self.generation_kwargs["temperature"] = temperature
        if getattr(self, "vllm_generation", None) is not None:
            self.vllm_generation.temperature = temperature
        set_fused_head_temperature(peft_base(self.accelerator.unwrap_model(self.model)), temperature)
        if self.ref_model is not None:
            set_fused_head_temperature(self.accelerator.unwrap_model(self.ref_model), temperature)
        self._metrics["train"]["temperature"].append(temperature)

    # --- dataset order -------------------------------------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        dataset = self.train_dataset if dataset is None else dataset
        order = None
        if self.args.order_dataset != "random":
            difficulties = dataset["difficulty"] if "difficulty" in dataset.column_names else None
            order = prompt_order(self.args.order_dataset, difficulties, n=len(dataset), seed=self.args.seed)
        return OrderedRepeatSampler(
            dataset,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            order=order,
            seed=self.args.seed,
        )

    # --- phases: timing/<phase> (seconds) and memory/peak_<phase> (GiB) per optimizer step, mmr1kit.phases ------

    def _generate_single_turn(self, *args, **kwargs):
        # The generation call alone: TRL's `_generate` also renders the chat template and preprocesses the images
        # (the first of its two image passes), which goes to timing/other, so tokens_per_second is generation's.
        # Phases are measured in training only: an evaluation in between is not part of the next optimizer step.
        with self.phases.phase("generate", self.model.training):
            return super()._generate_single_turn(*args, **kwargs)

    def _generate(self, prompts):
        out = super()._generate(prompts)
        if self.model.training:
            self.phases.generated_tokens += sum(len(ids) for ids in out[1])  # completion_ids: one list per completion
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.phases.phase("score", self.model.training):
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._round_rewards = out  # (N, n_funcs), all processes: what TRL's advantages were computed from
        return out

    def training_step(self, model, inputs, num_items_in_batch):
        with self.phases.phase("step"):
            out = super().training_step(model, inputs, num_items_in_batch)
        if self._step % self.current_gradient_accumulation_steps == 0:  # the optimizer step is complete
            # TRL's own clock of the step (just appended): the phases add up to it, whatever the scheduler does
            # between TRL's timer and ours on a busy machine
            self.phases.log_timing(self._metrics["train"], step_time=self._metrics["train"]["step_time"][-1])
        return out

    # --- loss ----------------------------------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args,
                                           compute_entropy=False, **kwargs):
        self.phases.begin("ref", model is self.ref_model and self.model.training)
        # The exact KL needs the final hidden states of the loss's policy pass and of the reference pass: keep them
        # from these forwards (a hook on the backbone) instead of running the two backbones again.
        # The pass whose log-probs TRL compares with vLLM's needs them too (mmr1kit.sampling.ProcessedLogprobs).
        processed = self.processed_logprobs.wants(model, compute_entropy)
        keep = processed or self._exact_kl_wanted() and (compute_entropy or model is self.ref_model)
        with capture_hidden(self.accelerator.unwrap_model(model), logits_to_keep, enabled=keep) as hidden:
            out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                             compute_entropy=compute_entropy, **kwargs)
        if processed:  # log-probs of vLLM's processed (top-k / top-p) distribution, for TRL's ratio
            logps = self.processed_logprobs.processed(model, out[0], hidden["value"], input_ids, attention_mask)
            out = (logps, *out[1:])
        if compute_entropy:  # only the policy pass of `_compute_loss` asks for entropies
            self._policy_pass = (*out[:2], hidden.get("value"))
        elif model is self.ref_model:
            self._ref_hidden = None if "value" not in hidden else hidden["value"].detach()
        self.phases.end("ref")
        return out

    def _exact_kl_wanted(self) -> bool:
        return self.ref_model is not None and (self.args.kl_approximator == "exact" or self.args.exact_kl_every > 0)

    def _aggregate(self, per_token, mask, inputs):
        """Reduce a `(B, T)` per-token term exactly as TRL reduces its per-token loss for `loss_type`."""
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type in ("grpo", "sapo"):
            return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if self.loss_type == "bnpo":
            return (per_token * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
        if self.loss_type == "dr_grpo":
            return (per_token * mask).sum() / (per_token.size(0) * self.max_completion_length) / accumulation
        if self.loss_type == "luspo":
            return (per_token * mask).sum(-1).mean() / accumulation
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return (per_token * mask).sum() / normalizer

    def _global_mean(self, per_token, mask) -> float:
        totals = self.accelerator.reduce(torch.stack([(per_token * mask).sum(), mask.sum().float()]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _completion_hidden(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states `(B, T, H)` at the positions predicting the completion tokens, and the LM head.

        Runs the model's backbone, as TRL's fused head does, so no `(B, L, V)` logits are materialised.
        """
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        mm = {k: inputs[k] for k in MULTIMODAL_KEYS if inputs.get(k) is not None}
        module = peft_base(self.accelerator.unwrap_model(model))
        out = module.base_model(
            input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
            attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1),
            use_cache=False,
            **mm,
        )
        T = completion_ids.size(1)
        return out.last_hidden_state[:, -T - 1 : -1], module.get_output_embeddings().weight

    def _exact_kl(self, model, inputs, hidden, with_grad: bool):
        """`(B, T)` exact KL to the reference and `(B, T)` reference entropy, at the sampling temperature.

        `hidden` `(B, T, H)` comes from the loss's policy forward and `inputs["ref_hidden"]` from the generation
        round's reference forward; either is recomputed when missing (e.g. a PEFT model without a separate reference).
        """
        module = peft_base(self.accelerator.unwrap_model(model))
        head = module.get_output_embeddings().weight
        if hidden is None:
            with torch.set_grad_enabled(with_grad):
                hidden, head = self._completion_hidden(model, inputs)
        ref_hidden = inputs.get("ref_hidden")
        if ref_hidden is None:
            with torch.no_grad():
                ref_hidden, _ = self._completion_hidden(self.ref_model, inputs)
        ref_head = self.accelerator.unwrap_model(self.ref_model).get_output_embeddings().weight
        hidden = hidden if with_grad else hidden.detach()
        return kl.exact_from_hidden(hidden, head, ref_hidden, ref_head, temperature=self.temperature)

    def _compute_loss(self, model, inputs):
        capsules.keep(self, inputs)  # a capsule step's micro-batch, as the loss reads it
        args = self.args
        kind = args.kl_approximator
        # TRL's own k3 path stays untouched (the neutral-settings equivalence); other estimators replace it.
        trl_kl = args.use_kl and kind == "k3"
        beta = self.beta
        self.beta = beta if trl_kl else 0.0
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.beta = beta
        logps, entropies, hidden = self._policy_pass
        self._policy_pass = None
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        ref = inputs.get("ref_per_token_logps")
        if ref is not None:
            for name, value in kl.estimate_all(logps.detach(), ref).items():
                metrics[f"kl/{name}"].append(self._global_mean(value, mask))
            if not trl_kl:
                metrics["kl"].append(metrics["kl/k3"][-1])
            if args.use_kl and kind in ("k1", "k2"):
                loss = loss + beta * self._aggregate(kl.estimate(kind, logps, ref), mask, inputs)
        if self.ref_model is not None and (kind == "exact" or self._exact_kl_due()):
            exact_kl, ref_entropy = self._exact_kl(model, inputs, hidden, with_grad=kind == "exact" and args.use_kl)
            metrics["kl/exact"].append(self._global_mean(exact_kl.detach(), mask))
            metrics["entropy/ref"].append(self._global_mean(ref_entropy, mask))
            metrics["entropy/ref_delta"].append(metrics["entropy"][-1] - metrics["entropy/ref"][-1])
            if kind == "exact" and args.use_kl:
                loss = loss + beta * self._aggregate(exact_kl, mask, inputs)
        if kind == "kimifull":
            loss = self._kimi_loss(logps, mask, inputs)
        if args.entropy_reg:
            # MMR1's sign: + w * (-H), so w > 0 raises entropy and w < 0 lowers it.
            entropy_term = self._aggregate(-entropies, mask, inputs)
            loss = loss + args.entropy_weight * entropy_term
            metrics["entropy/loss"].append(self.accelerator.gather(entropy_term.detach()).mean().item())
        return loss

    def _exact_kl_due(self) -> bool:
        every = self.args.exact_kl_every
        return bool(every) and self.state.global_step % every == 0

    def _kimi_loss(self, logps, mask, inputs):
        """Kimi k1.5's surrogate (`mmr1kit.kl.kimi_loss`) against the policy at the start of the generation round.

        The reference is `old_per_token_logps`, the policy that sampled this generation batch: re-synced every round
        by construction. When a batch is used for one optimizer step only, TRL skips computing it (it equals the
        current policy), and the KL term is exactly zero; it bites with `num_iterations` / `steps_per_generation` > 1.
        """
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        accumulation = self.current_gradient_accumulation_steps if self.model.training else 1.0
        loss, stats = kl.kimi_loss(logps, old, inputs["advantages"], mask, tau=self.beta)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["kimi/pg_loss"].append(stats["pg_loss"])
        self._metrics[mode]["kimi/kl_loss"].append(stats["kl_loss"])
        return loss / accumulation

    # --- rollouts, advantages, record ---------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        self.phases.begin("rollout", self.model.training)
        if self.model.training:  # `dynamic_sampling`: one or more tries of `_score_round`, merged (mmr1kit.signal)
            output = self.signal.generate(inputs)
        else:
            output = self._score_round(inputs)[0]
        self.phases.end("rollout")
        return output

    def _score_round(self, inputs, attempt: int = 0):
        """One TRL generation round (through the vision caches and the video hook of the bases) plus MMR1's
        advantages and the KL in the reward.

        Returns the local generation batch and, in training, the round's record for `mmr1kit.rounds.record_rounds`
        (rows, media, rewards, advantages, KL penalties and `filter_key` values of all processes; `None` in
        evaluation). The capsule's tags (`mmr1kit.capsules.tag`) are added by `mmr1kit.signal` to the batch that
        trains.
        """
        self._ref_hidden = None
        self.processed_logprobs.arm()
        output = super()._generate_and_score_completions(inputs)
        self.processed_logprobs.finish(output)  # the loss gets untruncated log-probs; vLLM's on the same scale
        if self._ref_hidden is not None:  # (B, T, H): TRL shuffles and splits it with the rest of the batch
            output["ref_hidden"], self._ref_hidden = self._ref_hidden, None
        rollout_check(self, output)  # vLLM's log-probs vs the trainer's: rollout/logp_diff_mean, rollout/logp_diff_max
        mode = "train" if self.model.training else "eval"
        rewards_per_func, self._round_rewards = self._round_rewards.cpu(), None  # (N, n_funcs), this round's
        penalty = mmr1_advantages.kl_penalty(self, output, mode)  # (N,) beta * KL of each completion, or None
        advantages = mmr1_advantages.apply(self, output, rewards_per_func, mode, penalty)  # (N,): what trains
        if mode != "train":
            return output, None
        return output, round_record(self, inputs, output, rewards_per_func, advantages, penalty, attempt)
