"""Sampling-temperature schedules (MMR1 `--temperature_func`).

A schedule maps the optimizer step to the sampling temperature of the next generation round. It is a pure
function of plain numbers (no torch); a trainer callback evaluates it and sets the temperature.

Differences from MMR1 (see its `src/open_r1/trainer/grpo_trainer_vllm.py`, and `docs/mmr1.md`, known bug 4):

1. `step` and `total_steps` count **optimizer steps**: the trainer passes the step about to run
   (`0 .. max_steps - 1`) and `total_steps = max_steps - 1`, so the first step samples at `begin` and the last at
   `end` (`mmr1kit.callbacks.TemperatureCallback`). MMR1 HEAD used
   `len(train_dataset) * num_generations // per_device_train_batch_size`, a count of samples per device, so a
   linear schedule covered only `1 / (num_processes * gradient_accumulation_steps)` of its range in one epoch
   (7 GPUs x GA 2: 0.1 rose to about 0.16 instead of 1.0).
2. The step is clamped to `[0, total_steps]`, so the temperature never leaves `[begin, end]`. MMR1's historical
   generator (`temperature.py`) was unbounded and advanced once per micro-batch.
3. Decreasing schedules (`begin > end`) are allowed; MMR1 asserted `begin <= end`.
4. `"cosine"` is new.
5. `"constant"` returns `temperature` (MMR1 HEAD: `GRPOConfig.temperature`); `begin`/`end` are ignored.
"""

import math

TEMPERATURE_FUNCS = ("constant", "linear", "cosine")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")


def temperature_at(func: str, step: int, total_steps: int, *, temperature: float, begin: float, end: float) -> float:
    r"""
    Sampling temperature at optimizer step `step` of a run with `total_steps` optimizer steps.

    With `s = clamp(step, 0, total_steps) / total_steps` in `[0, 1]`:

    - `"constant"`: `T = temperature`.
    - `"linear"`:   `T = begin + (end - begin) * s`.
    - `"cosine"`:   `T = end + (begin - end) * (1 + cos(pi * s)) / 2`  (`begin` at `s = 0`, `end` at `s = 1`, flat at
      both ends).

    `begin > end` gives a decreasing schedule.

    Args:
        func (`str`):
            One of `TEMPERATURE_FUNCS`.
        step (`int`):
            Current optimizer step (`TrainerState.global_step`). Values outside `[0, total_steps]` are clamped.
        total_steps (`int`):
            The step that samples at `end`, in optimizer steps (the trainer passes `TrainerState.max_steps - 1`, at
            least 1), not samples per device as in MMR1.
        temperature (`float`):
            Temperature of the `"constant"` schedule. Must be > 0 when `func == "constant"`.
        begin (`float`):
            Temperature at step 0 of `"linear"`/`"cosine"`. Must be > 0 for those schedules.
        end (`float`):
            Temperature at step `total_steps` of `"linear"`/`"cosine"`. Must be > 0 for those schedules.

    Returns:
        `float`: the temperature, always > 0.

    Raises:
        ValueError: unknown `func`, `total_steps <= 0`, or a used temperature value that is not a finite number > 0.

    Example:
    ```python
    >>> temperature_at("linear", 50, 100, temperature=1.0, begin=0.1, end=1.0)
    0.55

    ```
    """
    if func not in TEMPERATURE_FUNCS:
        raise ValueError(f"Unknown temperature_func {func!r}; valid values are {', '.join(TEMPERATURE_FUNCS)}.")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"`total_steps` must be a positive int (the run's optimizer steps), got {total_steps!r}.")
    if func == "constant":
        _check_positive("temperature", temperature)
        return float(temperature)
    _check_positive("begin", begin)
    _check_positive("end", end)
    s = min(max(step, 0), total_steps) / total_steps
    if func == "linear":
        return begin + (end - begin) * s
    return end + (begin - end) * (1.0 + math.cos(math.pi * s)) / 2.0
