"""Tests for mmr1kit.schedules."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmr1kit.schedules import TEMPERATURE_FUNCS, temperature_at


def T(func, step, total=100, temperature=0.9, begin=0.1, end=1.0):
    return temperature_at(func, step, total, temperature=temperature, begin=begin, end=end)


@pytest.mark.parametrize("step", [0, 50, 100, 1000])
def test_constant_ignores_step_and_begin_end(step):
    assert T("constant", step) == 0.9
    assert T("constant", step, begin=-1.0, end=0.0) == 0.9  # begin/end are unused, hence not validated


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # begin
        (25, 0.325),  # 0.1 + 0.9 * 0.25
        (50, 0.55),  # 0.1 + 0.9 * 0.5
        (100, 1.0),  # end
        (150, 1.0),  # clamped past the end (MMR1's generator kept rising)
        (-5, 0.1),  # clamped below 0
    ],
)
def test_linear(step, expected):
    assert T("linear", step) == pytest.approx(expected)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # (1 + cos 0) / 2 = 1 -> begin
        (25, 1.0 - 0.9 * (1 + math.sqrt(0.5)) / 2),  # (1 + cos(pi/4)) / 2 = 0.8536 -> 0.2318
        (50, 0.55),  # (1 + cos(pi/2)) / 2 = 1/2 -> midpoint
        (100, 1.0),  # (1 + cos pi) / 2 = 0 -> end
        (200, 1.0),  # clamped
    ],
)
def test_cosine(step, expected):
    assert T("cosine", step) == pytest.approx(expected)


@pytest.mark.parametrize("func, mid", [("linear", 0.6), ("cosine", 0.6)])
def test_decreasing_schedules(func, mid):
    # begin 1.0 -> end 0.2: midpoint 0.6 for both
    assert T(func, 0, begin=1.0, end=0.2) == pytest.approx(1.0)
    assert T(func, 50, begin=1.0, end=0.2) == pytest.approx(mid)
    assert T(func, 100, begin=1.0, end=0.2) == pytest.approx(0.2)
    values = [T(func, s, begin=1.0, end=0.2) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@given(
    func=st.sampled_from(["linear", "cosine"]),
    begin=st.floats(0.01, 5.0),
    end=st.floats(0.01, 5.0),
    total=st.integers(1, 10_000),
    step=st.integers(-10, 20_000),
)
def test_schedule_stays_between_begin_and_end(func, begin, end, total, step):
    value = temperature_at(func, step, total, temperature=1.0, begin=begin, end=end)
    assert min(begin, end) - 1e-12 <= value <= max(begin, end) + 1e-12
    assert isinstance(value, float)


def test_returns_float():
    assert isinstance(temperature_at("constant", 0, 10, temperature=1, begin=1, end=1), float)
    assert isinstance(temperature_at("linear", 3, 10, temperature=1, begin=1, end=2), float)


def test_unknown_func_lists_valid_ones():
    assert TEMPERATURE_FUNCS == ("constant", "linear", "cosine")
    with pytest.raises(ValueError, match="constant, linear, cosine"):
        T("const", 0)  # MMR1's README spelling is not accepted


@pytest.mark.parametrize(
    "func, kwargs, match",
    [
        ("constant", {"temperature": 0.0}, "temperature"),
        ("constant", {"temperature": -0.5}, "temperature"),
        ("constant", {"temperature": float("nan")}, "temperature"),
        ("linear", {"begin": 0.0}, "begin"),
        ("linear", {"end": -1.0}, "end"),
        ("cosine", {"begin": float("inf")}, "begin"),
        ("cosine", {"end": 0.0}, "end"),
        ("linear", {"total": 0}, "total_steps"),
        ("cosine", {"total": -3}, "total_steps"),
        ("constant", {"total": 2.5}, "total_steps"),
    ],
)
def test_errors(func, kwargs, match):
    with pytest.raises(ValueError, match=match):
        T(func, 0, **kwargs)
