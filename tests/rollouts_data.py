"""A hand-built rollouts table (the `rollouts.jsonl` columns) shared by the rollout-group and widget tests."""

import pandas as pd

# Two steps, two groups each, G = 3. Total reward = accuracy + format.
#   (1, 0): accuracy 0 0 0, format 1 1 1  -> a failure, zero variance (all 1.0)
#   (1, 1): accuracy 1 0 0, format 1 0 1  -> mean 1.0, varied
#   (2, 0): accuracy 0 0 0, format 0 1 0  -> a failure, mean 1/3
#   (2, 1): accuracy 1 1 1, format 1 1 1  -> zero variance (all 2.0)
ACC = {(1, 0): [0, 0, 0], (1, 1): [1, 0, 0], (2, 0): [0, 0, 0], (2, 1): [1, 1, 1]}
FMT = {(1, 0): [1, 1, 1], (1, 1): [1, 0, 1], (2, 0): [0, 1, 0], (2, 1): [1, 1, 1]}


def make_rollouts(image=None):
    rows = []
    for (step, group), accs in ACC.items():
        for i, acc in enumerate(accs):
            fmt = FMT[step, group][i]
            rows.append({"step": step, "prompt_id": f"p{step}{group}", "group": group, "image": image,
                         "problem": "Box the red circle.", "solution": "[10, 10, 30, 30]",
                         "completion": f"<answer>[{10 + i}, 10, 30, 30]</answer>" if acc else "no idea",
                         "rewards/accuracy": float(acc), "rewards/format": float(fmt), "reward": float(acc + fmt),
                         "advantage": 0.0, "length": 5 + i, "truncated": i == 2})
    return pd.DataFrame(rows)


def keys(table):
    return [(int(s), int(g)) for s, g in table[["step", "group"]].itertuples(index=False)]
