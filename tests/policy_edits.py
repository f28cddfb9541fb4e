"""Force a sampling case on a real tiny policy, and watch what a trainer samples (never imported by mmr1kit)."""

import torch


@torch.no_grad()
def favour_tokens(model, tokenizer, token_ids, margin: float = 60.0) -> None:
    """Edit, in place, the LM head rows of `token_ids` so that the policy puts almost all its mass on them.

    Each row becomes `margin * mu / |mu|^2`, with `mu` the mean final hidden state of a probe text: every position
    whose hidden state has a positive projection on `mu` (all of them in the tiny models; checked by the callers'
    failing arms) then gives those tokens a logit of about `margin` times that projection, far above the others.
    """
    probe = tokenizer(["How many red circles are there? Answer: there are three", "blue square 12 objects"],
                      return_tensors="pt", padding=True)
    hidden = model.base_model(input_ids=probe.input_ids, attention_mask=probe.attention_mask).last_hidden_state
    mu = hidden[probe.attention_mask.bool()].float().mean(0)
    head = model.get_output_embeddings().weight
    head[list(token_ids)] = (margin * mu / mu.norm() ** 2).to(head.dtype)


def record_completions(trainer) -> list:
    """Make `trainer._generate` record the completion ids of every generation batch (TRL's `_generate` returns them
    second) and return them unchanged; returns the list it fills. `del trainer._generate` undoes it."""
    sampled, generate = [], trainer._generate

    def spy(prompts):
        out = generate(prompts)
        sampled.extend(out[1])
        return out

    trainer._generate = spy
    return sampled
