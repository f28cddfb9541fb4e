"""Entry script of the multi-process tests: `accelerate launch ... tests/helpers_mp.py CONFIG.yaml [--field value]`.

It is `python -m mmr1kit.train` (the very same `main`) with two things a test needs to check the run from outside:

- `checksum_reward`: deterministic in the completion text and graded (17 levels), so the test can recompute every
  reward from the recorded text, and group advantages are rarely degenerate;
- `DumpingTrainer`: each process appends what it trains on to `<run_dir>/rank<k>.jsonl`: the step, the prompt ids,
  the completion texts and the advantages that enter its loss (after the cross-process gather and slice).
"""

import json
import os
from pathlib import Path

from mmr1kit.train import main
from mmr1kit.trainer import MMR1Trainer


def checksum_reward(completions, **kwargs):
    return [(sum(map(ord, c[0]["content"])) % 17) / 16 for c in completions]


class DumpingTrainer(MMR1Trainer):
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            ids = output["completion_ids"].masked_fill(output["completion_mask"] == 0, self._tokenizer.pad_token_id)
            row = {
                "launch": os.environ.get("MP_TEST_LAUNCH"),
                "rank": self.accelerator.process_index,
                "world": self.accelerator.num_processes,
                "step": self.state.global_step + 1,
                "prompt_ids": [x["id"] for x in inputs],
                "texts": self.processing_class.batch_decode(ids, skip_special_tokens=True),
                "advantages": output["advantages"].tolist(),
            }
            path = Path(self.args.run_dir) / f"rank{self.accelerator.process_index}.jsonl"
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
        return output


if __name__ == "__main__":
    main(reward_funcs=[checksum_reward], trainer_cls=DumpingTrainer)
