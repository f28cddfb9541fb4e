"""Phase bookkeeping of a GRPO training step: the seconds (`timing/*`) and the peak memory (`memory/peak_*`) of each
phase, logged once per optimizer step.

`MMR1Trainer` opens a phase around each of TRL's hooks (`begin(name)` / `end(name)`, or `with phases.phase(name)`);
phases nest (generation runs inside the rollout, which runs inside `training_step`). Time is summed per phase. Memory
is measured in segments: at every phase boundary the gauge's peak since the last boundary goes to the innermost open
phase and the gauge is reset, so each phase's figure is the highest memory reached while it, and no phase inside it,
was running.

Memory phases (`memory/peak_<name>`, GiB, highest over the micro-steps of an optimizer step):

- `generate`: the generation call (HF `generate` with its KV cache, or vLLM);
- `reference`: the reference model's log-prob pass (a separate reference model; under LoRA TRL runs the policy with
  its adapters disabled, which is counted in `rollout`);
- `rollout`: the rest of the rollout (chat template, image preprocessing, old log-probs, rewards, the record);
- `loss`: `training_step` outside the rollout: the policy forward and backward of the loss (and, under DeepSpeed,
  its optimizer step, which runs inside the backward);
- `optimizer`: `optimizer.step()` (between the `on_pre_optimizer_step` and `on_optimizer_step` callbacks);
- `memory/peak`: the highest of all, gradient clipping and anything between phases included.

The gauge: on CUDA, the caching allocator's peak of allocated tensor bytes (`torch.cuda.max_memory_allocated`, reset
with `torch.cuda.reset_peak_memory_stats`) of this process's device; on the CPU, the process's resident set peak
(`VmHWM` of `/proc/self/status`, reset by writing `5` to `/proc/self/clear_refs`: Linux), which includes the
libraries and everything else the process holds. Where `clear_refs` cannot be written the CPU figure is the
process's peak since it started (`ru_maxrss`), the same for every phase.
"""

from __future__ import annotations

import contextlib
import resource
import time

import torch
from transformers import TrainerCallback

GIB = 2**30
MEMORY_NAMES = {"generate": "generate", "ref": "reference", "step": "loss", "optimizer": "optimizer"}  # else rollout
MEMORY_PHASES = ("generate", "reference", "rollout", "loss", "optimizer")


class CudaGauge:
    """The CUDA caching allocator's peak allocated bytes on the current device."""

    kind = "cuda_max_memory_allocated"
    process_peak = 0  # the highest peak read before any reset, across gauges (what max_memory_allocated would say)

    def reset(self) -> None:
        CudaGauge.process_peak = max(CudaGauge.process_peak, self.peak())
        torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated()


class ResidentGauge:
    """The process's resident set peak (`VmHWM`), reset through `/proc/self/clear_refs` where Linux allows it."""

    kind = "process_resident_peak"

    def __init__(self):
        self.resettable = True
        self.process_peak = 0  # the highest VmHWM ever read, across resets (what VmHWM alone would say)
        self.reset()

    def reset(self) -> None:
        if not self.resettable:
            return
        self.process_peak = max(self.process_peak, self.peak())
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.resettable = False
            self.kind = "process_resident_peak_since_start"

    def peak(self) -> int:
        return resident_peak_bytes()


def resident_peak_bytes() -> int:
    """`VmHWM`: the resident set peak of this process's own address space since the last reset."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


_RESIDENT = None


def gauge_for(device) -> CudaGauge | ResidentGauge:
    """The gauge of `device` (a `torch.device` or its type): CUDA's allocator peak, else the resident set peak."""
    global _RESIDENT
    if torch.device(device).type == "cuda":
        return CudaGauge()
    if _RESIDENT is None:  # one per process: VmHWM is the process's
        _RESIDENT = ResidentGauge()
    return _RESIDENT


def process_peak_bytes(device="cpu") -> int:
    """The process's peak since it started, across the resets of the per-phase gauges: the resident set (`"cpu"`)
    or the CUDA allocator's allocated bytes (`"cuda"`), what `VmHWM` / `max_memory_allocated` say without resets."""
    if torch.device(device).type == "cuda":
        return max(torch.cuda.max_memory_allocated(), CudaGauge.process_peak)
    now = resident_peak_bytes()
    return max(now, _RESIDENT.process_peak) if _RESIDENT is not None else now


class PhaseLog:
    """Seconds and peak memory of the phases of the current optimizer step.

    Args:
        device (`torch.device` or `str`): The training device; picks the memory gauge (`gauge_for`).
    """

    def __init__(self, device):
        self.gauge = gauge_for(device)
        self.gauge.reset()
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, int] = {}
        self.generated_tokens = 0
        self._open: list[tuple[str, bool, float, contextlib.AbstractContextManager]] = []

    def begin(self, name: str, enabled: bool = True) -> None:
        """Open phase `name` (a disabled phase, e.g. during evaluation, is only a placeholder for `end`)."""
        marker = torch.profiler.record_function(f"mmr1kit/{name}") if enabled else contextlib.nullcontext()
        if enabled:
            self._segment()
        marker.__enter__()
        self._open.append((name, enabled, time.perf_counter(), marker))

    def end(self, name: str) -> None:
        """Close phase `name`, the innermost open one."""
        if not self._open or self._open[-1][0] != name:
            raise RuntimeError(f"PhaseLog.end({name!r}): open phases are {[p[0] for p in self._open]}")
        _, enabled, start, marker = self._open[-1]
        if enabled:
            # the clock stops before the memory reading, so the gauge's own cost is in no phase's seconds
            self.add_seconds(name, time.perf_counter() - start)
            self._segment()
        self._open.pop()
        marker.__exit__(None, None, None)

    @contextlib.contextmanager
    def phase(self, name: str, enabled: bool = True):
        """`begin(name)` ... `end(name)` around a block."""
        self.begin(name, enabled)
        try:
            yield
        finally:
            self.end(name)

    def add_seconds(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def _segment(self) -> None:
        """Give the peak since the last boundary to the innermost open phase; start a new segment."""
        open_names = [p[0] for p in self._open if p[1]]
        name = MEMORY_NAMES.get(open_names[-1], "rollout") if open_names else "other"
        self.peaks[name] = max(self.peaks.get(name, 0), self.gauge.peak())
        self.gauge.reset()

    def log_timing(self, metrics, step_time: float | None = None) -> None:
        """Append this optimizer step's `timing/*` (seconds) and `tokens_per_second/generate` to `metrics`.

        `timing/policy` is `training_step` less the rollout (forward + backward of the loss, and the exact KL);
        `timing/other` is the rollout less generation, scoring, the reference pass and the record. `step_time`: the
        step's duration as TRL measured it (its `step_time` metric), so that the phases add up to exactly that figure;
        by default the `step` phase's own clock.
        """
        t = self.seconds
        for phase in ("generate", "score", "ref", "record"):
            metrics[f"timing/{phase}"].append(t.get(phase, 0.0))
        rollout = t.get("rollout", 0.0)
        step = t.get("step", 0.0) if step_time is None else step_time
        metrics["timing/policy"].append(step - rollout)
        metrics["timing/other"].append(rollout - sum(t.get(p, 0.0) for p in ("generate", "score", "ref", "record")))
        if t.get("generate"):
            metrics["tokens_per_second/generate"].append(self.generated_tokens / t["generate"])
        self.seconds, self.generated_tokens = {}, 0

    def log_memory(self, metrics) -> None:
        """Append this optimizer step's `memory/peak_<phase>` and `memory/peak` (GiB) to `metrics`; start afresh."""
        self._segment()
        for name in MEMORY_PHASES:
            if name in self.peaks:
                metrics[f"memory/peak_{name}"].append(self.peaks[name] / GIB)
        if self.peaks:
            metrics["memory/peak"].append(max(self.peaks.values()) / GIB)
        self.peaks = {}


class PhaseCallback(TrainerCallback):
    """Measures the optimizer step as a phase and logs the step's memory figures (after it, before the step's log)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.phases.begin("optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        phases = self.trainer.phases
        phases.end("optimizer")
        phases.log_memory(self.trainer._metrics["train"])
