"""Tests for mmr1kit.kl: estimators, exact KL, Kimi surrogate, group advantages."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmr1kit import kl

torch.set_num_threads(1)  # the CI machine is shared; every tensor here is tiny
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("k1", "k1"),
        ("k2", "k2"),
        ("k3", "k3"),
        ("kimikl", "k2"),  # MMR1 code spelling
        ("kimi", "k2"),  # MMR1 README spelling
        ("fullkimi", "kimifull"),  # MMR1 code spelling
        ("kimifull", "kimifull"),  # MMR1 README spelling
        ("exact", "exact"),
    ],
)
def test_canonical_name(kind, expected):
    assert kl.canonical_name(kind) == expected


def test_canonical_name_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="k1.*k2.*k3.*kimikl.*kimi.*fullkimi.*kimifull.*exact"):
        kl.canonical_name("k4")


@pytest.mark.parametrize("kind", ["k4", "fullkimi", "kimifull", "exact", "K1", ""])
def test_estimate_unknown_raises_and_lists_aliases(kind):
    with pytest.raises(ValueError, match=r"k1, k2, k3, kimikl, kimi"):
        kl.estimate(kind, torch.zeros(1, 1), torch.zeros(1, 1))


# ---------------------------------------------------------------------------------------------------------------------
# Sampled estimators: hand-computed values
# ---------------------------------------------------------------------------------------------------------------------

# logp - ref = [1, -1, 0] ; d = ref - logp = [-1, 1, 0]
LOGP = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
REF = torch.tensor([[-2.0, -1.0, -0.5]], dtype=torch.float64)
HAND = {
    "k1": [1.0, -1.0, 0.0],  # logp - ref
    "k2": [0.5, 0.5, 0.0],  # 0.5 * (+-1)^2
    "k3": [math.exp(-1.0), math.e - 2.0, 0.0],  # exp(-1) + 1 - 1 = 0.3679 ; exp(1) - 1 - 1 = 0.7183 ; 1 - 0 - 1
}


@pytest.mark.parametrize(
    "kind, alias_of", [("k1", "k1"), ("k2", "k2"), ("k3", "k3"), ("kimikl", "k2"), ("kimi", "k2")]
)
def test_estimate_hand_values(kind, alias_of):
    out = kl.estimate(kind, LOGP, REF)
    assert out.shape == (1, 3)
    torch.testing.assert_close(out, torch.tensor([HAND[alias_of]], dtype=torch.float64))


def test_estimate_all_keys_and_values():
    out = kl.estimate_all(LOGP, REF)
    assert list(out) == ["k1", "k2", "k3"]
    for name, values in HAND.items():
        torch.testing.assert_close(out[name], torch.tensor([values], dtype=torch.float64))


def test_k3_accurate_for_tiny_differences():
    # d = ref - logp = 1e-6: k3 = d^2/2 + d^3/6 + ... = 5e-13. In float32 the naive exp(d) - d - 1 is off by ~1e-7
    # (the ulp of 1.0); expm1(d) - d is off by ~1e-13 (the ulp of 1e-6).
    logp, ref = torch.tensor([[0.0]]), torch.tensor([[1e-6]])
    naive = torch.exp(ref - logp) - (ref - logp) - 1
    assert abs(naive.item() - 5e-13) > 1e-8
    assert abs(kl.estimate("k3", logp, ref).item() - 5e-13) < 2e-13


def test_estimators_gradient_flows_through_logp():
    logp = LOGP.clone().requires_grad_(True)
    kl.estimate("k3", logp, REF).sum().backward()
    # d k3 / d logp = 1 - exp(ref - logp) = [1 - e^-1, 1 - e, 0]
    torch.testing.assert_close(logp.grad, torch.tensor([[1 - math.exp(-1), 1 - math.e, 0.0]], dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-30, 0, allow_nan=False), min_size=1, max_size=8),
    st.lists(st.floats(-30, 0, allow_nan=False), min_size=1, max_size=8),
)
def test_k2_k3_nonnegative_and_zero_at_equality(a, b):
    n = min(len(a), len(b))
    logp = torch.tensor([a[:n]], dtype=torch.float64)
    ref = torch.tensor([b[:n]], dtype=torch.float64)
    assert (kl.estimate("k2", logp, ref) >= 0).all()
    assert (kl.estimate("k3", logp, ref) >= 0).all()
    for name in kl.ESTIMATORS:
        assert (kl.estimate(name, logp, logp) == 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# Sampled estimators: statistics against the true KL of two categorical distributions
# ---------------------------------------------------------------------------------------------------------------------


def _sample_estimators(p, q, n, seed):
    """Draw n tokens from p; return the three estimators (n,) and the true KL(p || q)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.multinomial(p, n, replacement=True, generator=gen)
    logp, logq = p.log()[tokens][None], q.log()[tokens][None]
    true_kl = (p * (p.log() - q.log())).sum().item()
    return {k: v[0] for k, v in kl.estimate_all(logp, logq).items()}, true_kl


def _far_pair():
    # KL = 0.7 ln 7 + 0.2 ln(2/3) + 0.1 ln(1/6) = 1.1018 ; 0.5 E_p[(ln p/q)^2] = 1.5023
    return torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)


def _random_pair(seed, spread):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, generator=gen, dtype=torch.float64)
    p = logits.softmax(-1)
    q = (logits + spread * torch.randn(8, generator=gen, dtype=torch.float64)).softmax(-1)
    return p, q


@pytest.mark.parametrize("pair", ["far", "random", "close"])
@pytest.mark.parametrize("name", ["k1", "k3"])
def test_k1_k3_unbiased(pair, name):
    p, q = {"far": _far_pair(), "random": _random_pair(1, 1.0), "close": _random_pair(2, 0.1)}[pair]
    n = 100_000
    est, true_kl = _sample_estimators(p, q, n, seed=0)
    x = est[name]
    stderr = x.std().item() / math.sqrt(n)
    assert abs(x.mean().item() - true_kl) < 4 * stderr, (x.mean().item(), true_kl, stderr)


def test_k2_biased_but_unbiased_for_its_own_target():
    p, q = _far_pair()
    n = 100_000
    est, true_kl = _sample_estimators(p, q, n, seed=0)
    x = est["k2"]
    stderr = x.std().item() / math.sqrt(n)
    half_second_moment = 0.5 * (p * (p.log() - q.log()) ** 2).sum().item()
    assert true_kl == pytest.approx(1.1018, abs=1e-4)
    assert half_second_moment == pytest.approx(1.5023, abs=1e-4)
    assert abs(x.mean().item() - true_kl) > 20 * stderr  # biased for the KL ...
    assert abs(x.mean().item() - half_second_moment) < 4 * stderr  # ... because it estimates 0.5 E[(log p/q)^2]


def test_k1_much_noisier_than_k3_for_close_distributions():
    p, q = _random_pair(3, 0.1)
    est, true_kl = _sample_estimators(p, q, 50_000, seed=0)
    assert true_kl < 0.01
    assert est["k1"].std() > 3 * est["k3"].std()
    assert (est["k1"] < 0).any() and (est["k3"] >= 0).all()  # k1 goes negative per sample, k3 never does


# ---------------------------------------------------------------------------------------------------------------------
# Exact KL
# ---------------------------------------------------------------------------------------------------------------------


def _exact_reference(logits, ref_logits, temperature):
    logp = (logits / temperature).log_softmax(-1)
    logq = (ref_logits / temperature).log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def test_exact_hand_value():
    # p = softmax([0, 0]) = [1/2, 1/2] ; q = softmax([0, ln 3]) = [1/4, 3/4]
    # KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.143841
    logits = torch.tensor([[[0.0, 0.0]]])
    ref_logits = torch.tensor([[[0.0, math.log(3.0)]]])
    for chunk in (1, 2, 5):
        torch.testing.assert_close(
            kl.exact(logits, ref_logits, chunk_size=chunk), torch.tensor([[0.5 * math.log(4 / 3)]])
        )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10, 64])  # V = 10: 3 and 7 do not divide it, 64 > V
def test_exact_matches_direct_softmax(temperature, chunk_size):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 4, 10, generator=gen, dtype=torch.float64)
    ref_logits = 3 * torch.randn(2, 4, 10, generator=gen, dtype=torch.float64)
    out = kl.exact(logits, ref_logits, temperature=temperature, chunk_size=chunk_size)
    assert out.shape == (2, 4) and out.dtype == torch.float64
    torch.testing.assert_close(out, _exact_reference(logits, ref_logits, temperature))


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 64])
def test_exact_gradient_matches_unchunked(chunk_size):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_logits = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, generator=gen, dtype=torch.float64)  # a non-uniform upstream gradient
    (kl.exact(logits, ref_logits, temperature=0.8, chunk_size=chunk_size) * weights).sum().backward()
    got = logits.grad.clone(), ref_logits.grad.clone()
    logits.grad = ref_logits.grad = None
    (_exact_reference(logits, ref_logits, 0.8) * weights).sum().backward()
    torch.testing.assert_close(got[0], logits.grad)
    torch.testing.assert_close(got[1], ref_logits.grad)


def test_exact_gradcheck():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_logits = torch.randn(1, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl.exact(a, b, 1.3, 2), (logits, ref_logits))


def test_exact_only_policy_grad_when_ref_detached():
    logits = torch.randn(1, 2, 6, requires_grad=True)
    kl.exact(logits, torch.randn(1, 2, 6), chunk_size=4).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(1, 2), atol=1e-6, rtol=0)  # softmax shift invariance


def test_exact_bfloat16_computes_in_float32():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 50, generator=gen).bfloat16().requires_grad_(True)
    ref_logits = torch.randn(2, 3, 50, generator=gen).bfloat16()
    out = kl.exact(logits, ref_logits, chunk_size=16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _exact_reference(logits.float(), ref_logits.float(), 1.0), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_exact_zero_for_equal_or_shifted_logits_and_nonnegative():
    logits = torch.randn(3, 4, 9, dtype=torch.float64)
    torch.testing.assert_close(kl.exact(logits, logits + 5.0, chunk_size=4), torch.zeros(3, 4, dtype=torch.float64))
    assert (kl.exact(logits, torch.randn(3, 4, 9, dtype=torch.float64), chunk_size=4) >= 0).all()


def test_exact_handles_masked_vocabulary():
    # Token 2 is impossible under both: contributes 0 (not nan). Token 1 impossible only under the ref: KL = inf.
    logits = torch.tensor([[[0.0, 0.0, -math.inf]]])
    ref_both = torch.tensor([[[0.0, math.log(3.0), -math.inf]]])
    torch.testing.assert_close(kl.exact(logits, ref_both, chunk_size=2), torch.tensor([[0.5 * math.log(4 / 3)]]))
    ref_missing = torch.tensor([[[0.0, -math.inf, 0.0]]])
    assert kl.exact(logits, ref_missing, chunk_size=2).item() == math.inf


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ref_logits": torch.zeros(1, 2, 4)}, "differ in shape"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
    ],
)
def test_exact_errors(kwargs, match):
    args = {"logits": torch.zeros(1, 2, 3), "ref_logits": torch.zeros(1, 2, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        kl.exact(**args)


# ---------------------------------------------------------------------------------------------------------------------
# Masked means
# ---------------------------------------------------------------------------------------------------------------------


def test_sequence_and_batch_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    # rows: (1+2)/2 = 1.5 ; (4+5+6)/3 = 5 ; empty -> 0
    torch.testing.assert_close(kl.sequence_mean(x, mask), torch.tensor([1.5, 5.0, 0.0]))
    # all tokens: (1+2+4+5+6)/5 = 3.6
    torch.testing.assert_close(kl.batch_mean(x, mask.bool()), torch.tensor(3.6))


# ---------------------------------------------------------------------------------------------------------------------
# Kimi k1.5 surrogate
# ---------------------------------------------------------------------------------------------------------------------

KIMI_LOGP = [[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]]
KIMI_REF = [[-1.0, -1.5, -3.0], [-1.0, -0.5, 0.0]]
KIMI_MASK = [[1, 1, 1], [1, 1, 0]]
KIMI_ADV = [1.0, -2.0]
KIMI_TAU = 0.4


def test_kimi_loss_hand_values_and_gradient():
    logp = torch.tensor(KIMI_LOGP, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(KIMI_REF, dtype=torch.float64, requires_grad=True)
    loss, stats = kl.kimi_loss(logp, ref, torch.tensor(KIMI_ADV), torch.tensor(KIMI_MASK), KIMI_TAU)
    # seq_logp = [-6, -1] ; logratio = [0 - 0.5 + 0, 0.5 + 0] = [-0.5, 0.5]
    # pg_i = -A_i seq_logp_i = [6, -2] -> mean 2 ; kl_i = 0.4/2 * 0.25 = [0.05, 0.05] -> mean 0.05
    assert stats == pytest.approx({"pg_loss": 2.0, "kl_loss": 0.05, "logratio": 0.0})
    assert loss.item() == pytest.approx(2.05)
    loss.backward()
    # d loss / d logp_{i,t} = (tau * logratio_i - A_i) m_{i,t} / B
    # row 0: (0.4 * -0.5 - 1) / 2 = -0.6 ; row 1: (0.4 * 0.5 + 2) / 2 = 1.1, 0 on the padded token
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.6, -0.6, -0.6], [1.1, 1.1, 0.0]], dtype=torch.float64))
    assert ref.grad is None  # the reference is detached


def test_kimi_loss_gradient_is_that_of_the_paper_squared_objective():
    # Kimi k1.5: L = mean_j (A_j - tau * logratio_j)^2, whose gradient is 2 tau x the surrogate's.
    gen = torch.Generator().manual_seed(4)
    logp = torch.randn(4, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    ref = logp.detach() + 0.3 * torch.randn(4, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=gen) > 0.3
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    tau = 0.25
    loss, _ = kl.kimi_loss(logp, ref, adv, mask, tau)
    (surrogate_grad,) = torch.autograd.grad(loss, logp)
    logratio = ((logp - ref) * mask).sum(-1)
    squared = ((adv - tau * logratio) ** 2).mean()
    (squared_grad,) = torch.autograd.grad(squared, logp)
    torch.testing.assert_close(2 * tau * surrogate_grad, squared_grad)


def test_kimi_loss_kl_term_vanishes_on_policy():
    logp = torch.tensor(KIMI_LOGP, requires_grad=True)
    loss, stats = kl.kimi_loss(logp, logp.detach(), torch.tensor(KIMI_ADV), torch.tensor(KIMI_MASK), KIMI_TAU)
    assert stats["kl_loss"] == 0.0
    loss.backward()
    # pure policy gradient: -A_i m / B
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.5, -0.5], [1.0, 1.0, 0.0]]))


def test_kimi_loss_rejects_negative_tau():
    with pytest.raises(ValueError, match="tau"):
        kl.kimi_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), -0.1)


# ---------------------------------------------------------------------------------------------------------------------
# Benchmark script (smoke)
# ---------------------------------------------------------------------------------------------------------------------


def test_bench_exact_kl_quick(tmp_path):
    out = tmp_path / "exact_kl.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_exact_kl.py"), "--quick", "--out", str(out)],
        check=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    report = json.loads(out.read_text())
    assert {"machine", "versions", "config", "results"} <= set(report)
    assert report["max_abs_diff_vs_unchunked"] < 1e-4
    assert all(r["median_s"] > 0 for r in report["results"])
