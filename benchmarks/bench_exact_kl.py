"""Time `mmr1kit.kl.exact` (chunked full-vocabulary KL) against the unchunked formula and the sampled k3 estimator.

Usage:
    python benchmarks/bench_exact_kl.py                 # default sizes, ~20 s on one CPU thread
    python benchmarks/bench_exact_kl.py --quick --out /tmp/exact_kl.json

Methods timed, each as `forward` (no grad) and `forward_backward` (grad w.r.t. the policy logits):

- `k3`: the sampled estimator on precomputed token log-probs `(B, T)` (its marginal cost once TRL has the log-probs).
- `unchunked`: `log_softmax` of both logits, then `sum_v p (log p - log q)`: several `(B, T, V)` temporaries.
- `exact[chunk=c]`: `mmr1kit.kl.exact(..., chunk_size=c)`.

Memory: on CUDA, `torch.cuda.max_memory_allocated()` above the inputs (measured). On CPU (no allocator statistics),
an analytical count of the float32 temporaries alive at the peak of the forward pass, in bytes:

- `unchunked`: `4 * B*T*V * 4` (log p, log q, p, p * (log p - log q)).
- `exact[chunk=c]`: `6 * B*T*min(c, V) * 4 + 4 * B*T*ceil(V/c) * 4` (the scaled chunks, log-probs, p and the term of
  one chunk, plus the per-chunk logsumexps). The backward adds the `(B, T, V)` gradient itself in both cases.
- `k3`: `3 * B*T * 4`.

Times are wall-clock (`time.perf_counter`, CUDA synchronised), after one warm-up call; the JSON records all repeats,
their median, min and max.
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mmr1kit import kl


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per method (after one warm-up)")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V (Qwen2.5-VL: 151936)")
    parser.add_argument("--batch", type=int, default=2, help="completions B")
    parser.add_argument("--seq", type=int, default=16, help="completion tokens T")
    parser.add_argument("--chunk-sizes", default="4096,16384,151936", help="comma-separated chunk sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CI machine is shared)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/exact_kl.json", help="JSON report path")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for tests: V=1000, B=2, T=8, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.vocab, args.batch, args.seq, args.repeats, args.chunk_sizes = 1000, 2, 8, 2, "128,300,1000"
    args.chunk_sizes = [int(c) for c in str(args.chunk_sizes).split(",")]
    return args


def unchunked(logits, ref_logits):
    logp, logq = logits.float().log_softmax(-1), ref_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def analytical_bytes(method, chunk, b, t, v):
    if method == "k3":
        return 3 * b * t * 4
    if method == "unchunked":
        return 4 * b * t * v * 4
    c = min(chunk, v)
    return 6 * b * t * c * 4 + 4 * b * t * math.ceil(v / c) * 4


def measure(fn, repeats, device):
    """Run fn once to warm up, then `repeats` timed runs. Returns (times_s, peak_extra_bytes or None)."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return times, peak


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    b, t, v, dev = args.batch, args.seq, args.vocab, args.device
    logits = torch.randn(b, t, v, device=dev)
    ref_logits = logits + 0.5 * torch.randn(b, t, v, device=dev)
    logp = torch.randn(b, t, device=dev) - 2.0
    ref_logp = logp + 0.1 * torch.randn(b, t, device=dev)

    def run(method, chunk, backward):
        def fn():
            x = logits.detach().requires_grad_(backward)
            lp = logp.detach().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                if method == "k3":
                    out = kl.estimate("k3", lp, ref_logp)
                elif method == "unchunked":
                    out = unchunked(x, ref_logits)
                else:
                    out = kl.exact(x, ref_logits, chunk_size=chunk)
                if backward:
                    out.sum().backward()
            return out

        return fn

    methods = [("k3", None), ("unchunked", None)] + [("exact", c) for c in args.chunk_sizes]
    results = []
    for method, chunk in methods:
        for backward in (False, True):
            times, peak = measure(run(method, chunk, backward), args.repeats, dev)
            results.append(
                {
                    "method": method if chunk is None else f"exact[chunk={chunk}]",
                    "chunk_size": chunk,
                    "pass": "forward_backward" if backward else "forward",
                    "times_s": times,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "max_s": max(times),
                    "peak_extra_bytes": peak if peak is not None else analytical_bytes(method, chunk, b, t, v),
                    "memory_method": "cuda_max_memory_allocated" if peak is not None else "analytical_forward",
                }
            )
            r = results[-1]
            print(
                f"{r['method']:>22} {r['pass']:>16}  median {r['median_s'] * 1e3:9.2f} ms  "
                f"[{r['min_s'] * 1e3:.2f}, {r['max_s'] * 1e3:.2f}]  extra {r['peak_extra_bytes'] / 2**20:9.2f} MiB"
            )

    reference = unchunked(logits, ref_logits)
    max_diff = max(
        (kl.exact(logits, ref_logits, chunk_size=c) - reference).abs().max().item() for c in args.chunk_sizes
    )
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": dev,
            "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
        },
        "versions": {"torch": torch.__version__, "mmr1kit": _mmr1kit_version()},
        "config": {k: getattr(args, k) for k in ("repeats", "vocab", "batch", "seq", "chunk_sizes", "seed", "quick")},
        "max_abs_diff_vs_unchunked": max_diff,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"max |exact - unchunked| = {max_diff:.2e}; wrote {out}")
    return report


def _mmr1kit_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmr1kit")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
