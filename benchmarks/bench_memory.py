"""Peak memory of GRPO training against the group size G, with the per-device batch fixed at 4 completions.

Usage:
    python -m benchmarks.bench_memory            # G = 4, 8, 16, 32; 2 fresh processes each; about 1.5 min
    python -m benchmarks.bench_memory --quick    # G = 2, 4 with 2 completions per device (tests)

How "the generation batch fixed per device" is read here: what a device holds at once in the forward / backward
pass is fixed at `per_device_train_batch_size=4` completions, whatever G is. A group must be generated and scored
together (its advantages are computed within it), so one generation round holds exactly one group:
`steps_per_generation = G / 4` (the generation batch is G completions of one prompt), which TRL then splits into G/4
optimizer steps of 4 completions each (`gradient_accumulation_steps=1`: MMR1's mini-batches, which count
completions). The old / reference log-prob passes are chunked by TRL at `per_device_train_batch_size` too. What
still grows with G: the `generate` call (G sequences and their KV cache at once), the buffered generation batch (G
completions' ids, masks, log-probs and G copies of the image's `pixel_values`), and the image preprocessing of G
copies of the prompt.

Each G runs in a fresh process (`--repeats` times, interleaved across G, `--jobs` processes at a time: each one's
memory is its own) that trains two generation rounds
(`2 * G / 4` optimizer steps) with the demo's other GRPO settings (beta 0.04, so a reference model is loaded) on the
demo's tiny model. Figures per process:

- `peak_rss_bytes`: `VmHWM` of `/proc/self/status` at the end, the process's resident high-water mark (imports and
  model loading included; or the sampled peak below when the kernel's lazily synced counter lags it by a few pages):
  the figure the target is checked on (within 10% of G=4);
- `ru_maxrss_bytes`: `resource.getrusage(RUSAGE_SELF).ru_maxrss`, kept for comparison but not used: on Linux it is
  at least the *parent's* peak at the time of the spawn (exec carries the old address space's high-water mark into
  the child's rusage), so a subprocess started from a big parent (a notebook kernel, pytest) reports the parent;
- `rss_before_train_bytes`: the resident set just before `trainer.train()` (libraries, policy, reference, data);
- `train_peak_rss_bytes`: the highest resident set sampled every millisecond during `train()`;
- `train_increment_bytes`: `train_peak_rss_bytes - rss_before_train_bytes`, what training itself adds: on the tiny
  model it is small next to the ~0.6 GB of libraries, so it is reported too and is where growth with G would show;
- on CUDA, `cuda_max_allocated_bytes` (`torch.cuda.max_memory_allocated`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common

NAME = "memory"
TARGET = 1.10  # peak memory at any G within 10% of G=4


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--groups", default="4,8,16,32", help="group sizes G")
    parser.add_argument("--per-device", type=int, default=4, help="completions per device per forward/backward")
    parser.add_argument("--rounds", type=int, default=2, help="generation rounds trained per process")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per G")
    parser.add_argument("--jobs", type=int, default=2, help="processes measured at once (memory is per process)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # internal: one measured process
    args = parser.parse_args(argv)
    if args.quick:
        args.groups, args.per_device, args.rounds, args.repeats = "2,4", 2, 1, 1
    args.groups = [int(g) for g in str(args.groups).split(",")]
    bad = [g for g in args.groups if g % args.per_device]
    if bad:
        parser.error(f"every G must be a multiple of --per-device {args.per_device}: {bad}")
    return args


def high_water_bytes() -> int:
    """`VmHWM`: the peak resident set of this process's own address space (not inherited through exec), across the
    resets `mmr1kit.phases` makes to measure each phase."""
    from mmr1kit.phases import process_peak_bytes

    return process_peak_bytes()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples this process's resident set every `interval_s` in a thread; `.peak` is the highest seen."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s, self.peak, self._stop = interval_s, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def settings_for(group: int, args) -> dict:
    steps_per_generation = group // args.per_device
    settings = {
        **common.demo_grpo_settings(),
        "num_generations": group,
        "per_device_train_batch_size": args.per_device,
        "steps_per_generation": steps_per_generation,
        "gradient_accumulation_steps": 1,
        "max_steps": args.rounds * steps_per_generation,
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": args.seed,
    }
    if args.quick:
        settings["max_completion_length"] = 4
    return settings


def child(args) -> dict:
    """One fresh process: train with group size `args.child`, print the memory figures as the last line."""
    import resource

    import torch

    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.phases import process_peak_bytes
    from mmr1kit.trainer import MMR1Trainer

    common.setup_torch(args.threads)
    settings = settings_for(args.child, args)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as run_dir:
        config = MMR1Config.from_dict({**settings, "model_name_or_path": str(common.tiny_model(args.quick)),
                                       "run_dir": run_dir})
        data = common.counting_data(64)
        trainer = common.silence(MMR1Trainer(args=config, train_dataset=load_dataset(data, "train", config)))
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = rss_bytes()
        start = time.perf_counter()
        with PeakSampler() as sampler:
            trainer.train()
        train_s = time.perf_counter() - start
        ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {
        "group": args.child,
        "peak_rss_bytes": max(high_water_bytes(), sampler.peak),  # VmHWM can lag the sampled RSS by a few pages
        "ru_maxrss_bytes": ru_maxrss,
        "rss_before_train_bytes": before,
        "train_peak_rss_bytes": sampler.peak,
        "train_increment_bytes": sampler.peak - before,
        "cuda_max_allocated_bytes": process_peak_bytes("cuda") if cuda else None,
        "train_s": train_s,
        "optimizer_steps": trainer.state.global_step,
        "completions_generated": args.rounds * args.child,
    }


def run_child(group: int, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(group), "--threads", str(args.threads),
           "--seed", str(args.seed), "--per-device", str(args.per_device), "--rounds", str(args.rounds)]
    cmd += ["--quick"] if args.quick else []
    proc = subprocess.run(cmd, check=False, cwd=common.ROOT, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"bench_memory child G={group} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return None
    started = time.time()
    common.tiny_model(args.quick), common.counting_data(64)  # built once here, not inside a timed child
    load = common.LoadLog()
    runs = {g: [] for g in args.groups}
    tasks = [(r, g) for r in range(args.repeats)
             for g in args.groups[r % len(args.groups):] + args.groups[: r % len(args.groups)]]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait on the child processes
        for (r, group), out in zip(tasks, pool.map(lambda task: run_child(task[1], args), tasks)):
            out["repeat"], out["load_1min"] = r, load.sample()
            runs[group].append(out)
            print(f"[memory] rep {r} G={group:>3}: peak RSS {out['peak_rss_bytes'] / 2**20:.1f} MiB, "
                  f"train increment {out['train_increment_bytes'] / 2**20:.1f} MiB", flush=True)
    results = {}
    for group in args.groups:
        figures = {key: common.summarize([run[key] for run in runs[group]])
                   for key in ("peak_rss_bytes", "ru_maxrss_bytes", "rss_before_train_bytes", "train_peak_rss_bytes",
                               "train_increment_bytes", "train_s")}
        results[str(group)] = {**figures, "runs": runs[group]}
    base = results[str(args.groups[0])]
    for group in args.groups:
        r = results[str(group)]
        r["peak_ratio_vs_first"] = r["peak_rss_bytes"]["median"] / base["peak_rss_bytes"]["median"]
        r["train_increment_ratio_vs_first"] = (r["train_increment_bytes"]["median"]
                                               / max(base["train_increment_bytes"]["median"], 1))
        r["meets_target"] = r["peak_ratio_vs_first"] <= TARGET
        print(f"[memory] G={group:>3}: peak {r['peak_rss_bytes']['median'] / 2**20:.1f} MiB "
              f"(x{r['peak_ratio_vs_first']:.3f} of G={args.groups[0]}), increment "
              f"{r['train_increment_bytes']['median'] / 2**20:.1f} MiB", flush=True)
    config = {
        "groups": args.groups,
        "reading": "per_device_train_batch_size fixed; steps_per_generation = G / per_device (one group per "
                   "generation round); gradient_accumulation_steps = 1",
        "settings_per_group": {str(g): settings_for(g, args) for g in args.groups},
        "model": str(common.tiny_model(args.quick)),
        **{k: getattr(args, k) for k in ("per_device", "rounds", "repeats", "jobs", "seed", "threads")},
    }
    return common.write_result(common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results,
                               load=load.report(), started=started,
                               targets={"peak_ratio_vs_first": TARGET, "baseline_group": args.groups[0]})


if __name__ == "__main__":
    main()
