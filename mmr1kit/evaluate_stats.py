"""Uncertainty of evaluation results: bootstrap intervals, paired comparison of two models, outcome tables.

A held-out accuracy is an estimate: on 500 examples one standard error is about 2 points, so a 3-point gain between
two checkpoints may be noise. This module puts an interval on every accuracy-like figure and compares two models
evaluated on the same examples with a paired test, which is far more sensitive than comparing two intervals
(most examples are answered the same by both models; only the discordant ones carry information).

- `bootstrap_interval(values)`: a 95% interval of the mean of per-example values (0/1 correctness, IoU, ANLS), by
  `scipy.stats.bootstrap` (BCa; the percentile interval when BCa is undefined, e.g. a single discordant example).
  Constant values give a zero-width interval (every resample has the same mean).
- `paired_comparison(records, a, b)`: on the examples both models answered, the accuracy difference `b - a`, its 95%
  interval from the bootstrap of the per-example differences (the paired bootstrap: examples are resampled, each
  keeping both its answers), and McNemar's exact test: a two-sided binomial test of the discordant pairs
  (`scipy.stats.binomtest(k=min(only_a, only_b), n=only_a + only_b, p=0.5)`), which is what
  `statsmodels.stats.contingency_tables.mcnemar(exact=True)` computes.
- `outcome_table(records)`: per model (or prompt) the counts and rates of `correct`, `wrong` (an answer was found and
  it is wrong) and `no_answer` (the extractor found none), each rate with its interval.

Records are `mmr1kit.evaluate` records: one row per (example, sample); only `sample == 0` is used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000
OUTCOMES = ("correct", "wrong", "no_answer")


def bootstrap_interval(values, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """`confidence` interval of the mean of `values` (NaNs dropped) by the bootstrap; `(nan, nan)` when empty.

    Args:
        values (`array-like` of shape `(n,)`): Per-example values (e.g. 0/1 correctness, or a per-example difference).
        seed (`int`): Seeds the resampling, so the same values always give the same interval.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "degenerate distribution" warning: the percentile fallback follows
            result = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                     method=method, vectorized=True, random_state=np.random.default_rng(seed))
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high)
    return math.nan, math.nan


def outcomes(records: pd.DataFrame) -> pd.Series:
    """`correct`, `wrong` or `no_answer` per record, from `correct` and `answered` (absent: every answer counts)."""
    correct = records["correct"].astype(bool).to_numpy()
    answered = records["answered"].astype(bool).to_numpy() if "answered" in records else np.ones(len(records), bool)
    return pd.Series(np.where(correct, "correct", np.where(answered, "wrong", "no_answer")), index=records.index,
                     name="outcome")


def first_samples(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["sample"] == 0] if "sample" in records else records


def outcome_table(records: pd.DataFrame, by: str | list[str] = "label", **kwargs) -> pd.DataFrame:
    """Per group of `by`: `n`, the counts of `correct` / `wrong` / `no_answer`, and each rate with its interval.

    Columns: `n`, `correct`, `wrong`, `no_answer` (counts), `accuracy`, `accuracy_low`, `accuracy_high`,
    `wrong_rate`, `wrong_rate_low`, `wrong_rate_high`, `no_answer_rate`, `no_answer_rate_low`,
    `no_answer_rate_high`. Groups keep their order of first appearance; `kwargs` go to `bootstrap_interval`.
    """
    by = [by] if isinstance(by, str) else list(by)
    first = first_samples(records)
    missing = [c for c in by if c not in first]
    if missing:
        raise ValueError(f"outcome_table: records have no column(s) {missing}; columns: {sorted(first.columns)}")
    labelled = first.assign(outcome=outcomes(first))
    rows = []
    for key, group in labelled.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(group)
        for name in OUTCOMES:
            row[name] = int((group["outcome"] == name).sum())
        for name, rate in (("correct", "accuracy"), ("wrong", "wrong_rate"), ("no_answer", "no_answer_rate")):
            hits = (group["outcome"] == name).to_numpy(dtype=float)
            row[rate] = float(hits.mean())
            row[f"{rate}_low"], row[f"{rate}_high"] = bootstrap_interval(hits, **kwargs)
        rows.append(row)
    return pd.DataFrame(rows).set_index(by)


def metric_intervals(records: pd.DataFrame, columns: dict[str, str], **kwargs) -> dict:
    """`{f"{name}_low": ..., f"{name}_high": ...}` for each `name -> column` whose column `records` has."""
    out = {}
    for name, column in columns.items():
        if column in records:
            values = pd.to_numeric(records[column].astype(float), errors="coerce")
            out[f"{name}_low"], out[f"{name}_high"] = bootstrap_interval(values, **kwargs)
    return out


# --------------------------------------------------------------------------------------------------------------
# Two models on the same examples
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PairedComparison:
    """Model `b` against model `a` on the `n` examples both were evaluated on.

    `difference` is `accuracy_b - accuracy_a` and `[low, high]` its interval; `only_a` / `only_b` count the
    examples only `a` / only `b` answered correctly (the discordant pairs); `p_value` is McNemar's exact test.
    """

    a: str
    b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    only_a: int
    only_b: int
    p_value: float
    confidence: float = CONFIDENCE

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether McNemar's test rejects "same accuracy" at level `alpha`."""
        return self.p_value < alpha

    def __str__(self):
        return (f"{self.b} vs {self.a}: {100 * self.difference:+.1f} points "
                f"[{100 * self.low:+.1f}, {100 * self.high:+.1f}] ({100 * self.confidence:.0f}% interval), "
                f"McNemar p = {self.p_value:.2g} ({self.only_b} examples only {self.b} got right, {self.only_a} only "
                f"{self.a}; n = {self.n})")


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value of the discordant counts (1.0 when there are none)."""
    n = only_a + only_b
    return 1.0 if n == 0 else float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def paired_comparison(records: pd.DataFrame, a: str, b: str, *, by: str = "label", column: str = "correct",
                      **kwargs) -> PairedComparison:
    """Compare the records labelled `b` with those labelled `a` (column `by`) on the examples (`id`) both have.

    Raises:
        ValueError: `a` or `b` has no records, or the two share no example (the message gives the counts).
    """
    first = first_samples(records)
    found = list(dict.fromkeys(first[by])) if by in first else []
    for name in (a, b):
        if name not in found:
            raise ValueError(f"paired_comparison: no records with {by} = {name!r}; found {found}")
    table = first[first[by].isin([a, b])].pivot_table(index="id", columns=by, values=column, aggfunc="first")
    both = table.dropna()
    if both.empty:
        raise ValueError(f"paired_comparison: {a!r} and {b!r} share no example id "
                         f"({int(table[a].notna().sum())} and {int(table[b].notna().sum())} examples)")
    x, y = both[a].astype(bool).to_numpy(), both[b].astype(bool).to_numpy()
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    low, high = bootstrap_interval(y.astype(float) - x.astype(float), **kwargs)
    return PairedComparison(a=a, b=b, n=len(both), accuracy_a=float(x.mean()), accuracy_b=float(y.mean()),
                            difference=float(y.mean() - x.mean()), low=low, high=high, only_a=only_a, only_b=only_b,
                            p_value=mcnemar_exact(only_a, only_b),
                            confidence=kwargs.get("confidence", CONFIDENCE))


def comparison_table(records: pd.DataFrame, baseline: str | None = None, *, by: str = "label",
                     **kwargs) -> pd.DataFrame:
    """Every other group of `by` against `baseline` (default: the first), one row each (`PairedComparison` fields,
    plus `significant` at 0.05)."""
    groups = list(dict.fromkeys(first_samples(records)[by]))
    baseline = groups[0] if baseline is None else baseline
    rows = []
    for other in groups:
        if other != baseline:
            result = paired_comparison(records, baseline, other, by=by, **kwargs)
            rows.append({**asdict(result), "significant": result.significant()})
    return pd.DataFrame(rows)
