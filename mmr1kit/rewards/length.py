"""Length rewards: DAPO's soft overlong punishment, as TRL defines and implements it."""

from trl.rewards import get_soft_overlong_punishment


class SoftOverlong:
    r"""DAPO's soft overlong punishment (Eq. 13), TRL's `trl.rewards.get_soft_overlong_punishment` under the name
    `soft_overlong`, configured by the run (`max_completion_length`, `soft_punish_cache`):

        0                                   if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
        -1                                  if |y| > L_max

    `|y|` is the completion's length in tokens (`completion_ids`, which TRL passes to every reward function). A
    class, as TRL's, so that it pickles.
    """

    __name__ = "soft_overlong"

    def __init__(self, max_completion_len: int = 16, soft_punish_cache: int = 4):
        self.max_completion_len, self.soft_punish_cache = max_completion_len, soft_punish_cache
        self.punish = get_soft_overlong_punishment(max_completion_len, soft_punish_cache)

    def __call__(self, completions, solution=None, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is None or len(completion_ids) != len(completions):
            raise ValueError("soft_overlong needs completion_ids, one list of token ids per completion (TRL passes "
                             "them to every reward function)")
        return [float(r) for r in self.punish(completion_ids)]

    def __repr__(self):
        return f"SoftOverlong(max_completion_len={self.max_completion_len}, soft_punish_cache={self.soft_punish_cache})"
