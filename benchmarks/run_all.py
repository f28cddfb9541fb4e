"""Run every benchmark, each in a fresh process, then refresh the results table of `benchmarks/README.md`.

Usage:
    python -m benchmarks.run_all                 # the measurements (`make bench`); writes benchmarks/results/*.json
    python -m benchmarks.run_all --quick         # seconds-sized variants into results/*.quick.json (README untouched)
    python -m benchmarks.run_all --only overhead memory
    python -m benchmarks.run_all --table-only    # rebuild the README table from the results already there

The table is rebuilt from the result files between the README's `<!-- results:begin -->` and
`<!-- results:end -->` markers; everything else in the README is left as it is.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/run_all.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
QUIET_LOAD = 1.5
BUDGET_MIN = 12  # `make bench` should take "about 10 minutes" on the 2-core machine; more than 12 is a regression
# name -> module; run in this order (the long learning benchmark last)
BENCHMARKS = {
    "data": "benchmarks.bench_data",
    "overhead": "benchmarks.bench_overhead",
    "encode": "benchmarks.bench_encode",
    "memory": "benchmarks.bench_memory",
    "exact_kl": "benchmarks.bench_exact_kl",
    "learning": "benchmarks.bench_learning",
}
# Run only when named (`--only plan`): not part of `make bench`, whose budget they would exceed.
OPTIONAL = {"plan": "benchmarks.bench_plan"}  # the memory planner's calibration, about 15 min on 2 cores


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-sized variants; results/*.quick.json")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS) + list(OPTIONAL), default=None,
                        help=f"run only these (the optional {list(OPTIONAL)} run only when named here)")
    parser.add_argument("--skip", nargs="+", choices=list(BENCHMARKS), default=[], help="leave these out")
    parser.add_argument("--wait-quiet", type=float, default=0.0,
                        help=f"seconds to wait before each benchmark for a 1-min load average below {QUIET_LOAD}")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the README table")
    parser.add_argument("--results", default=str(RESULTS), help="results folder")
    parser.add_argument("--readme", default=str(README), help="README whose table is refreshed")
    return parser.parse_args(argv)


def result_path(results: Path, name: str, quick: bool) -> Path:
    return results / (f"{name}.quick.json" if quick else f"{name}.json")


def run_benchmark(name: str, quick: bool, results: Path, wait_quiet: float) -> dict:
    start = time.time()
    while os.getloadavg()[0] >= QUIET_LOAD and time.time() - start < wait_quiet:
        time.sleep(10)
    cmd = [sys.executable, "-m", {**BENCHMARKS, **OPTIONAL}[name], "--out", str(result_path(results, name, quick))]
    cmd += ["--quick"] if quick else []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"== {name}: {' '.join(cmd[1:])} (load {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env)
    return {"name": name, "returncode": proc.returncode, "seconds": round(time.time() - t0, 1)}


# --- the README table ---------------------------------------------------------------------------------------------

def _read(results: Path, name: str, quick: bool):
    path = result_path(results, name, quick)
    if not path.exists():
        return None
    return {**json.loads(path.read_text()), "_mtime": path.stat().st_mtime}  # bench_exact_kl records no date


def _spread(s: dict, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    """`median [min, max] (n)`."""
    f = lambda v: fmt.format(v * scale)
    return f"{f(s['median'])} [{f(s['min'])}, {f(s['max'])}] (n={s['n']})"


def _load(report: dict) -> str:
    load = report.get("load") or {}
    if "max_1min" not in load:
        return "not recorded"
    mark = "" if load.get("quiet") else " ⚠ busy"
    own = f" (quiet below {load['threshold']:.1f}: own processes)" if load.get("threshold", QUIET_LOAD) > QUIET_LOAD else ""
    return f"{load['before'][0]:.2f} → {load['after'][0]:.2f}, max {load['max_1min']:.2f}{own}{mark}"


def _when(report: dict) -> str:
    created = report.get("created") or report.get("_mtime")
    return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d") if created else "?"


def _met(flag) -> str:
    return {True: "✅ met", False: "❌ missed", None: "—"}[flag]


def table_rows(results: Path, quick: bool = False) -> list[list[str]]:
    rows = []
    overhead = _read(results, "overhead", quick)
    if overhead:
        labels = {
            "neutral_record_off": "(a) neutral options, record off",
            "neutral_record_on": "(a) neutral options, record on",
            "full_exact0": "(b) k3 + all sampled estimators + entropy reg + temperature schedule + record",
            "full_exact1": "(b) same + exact KL logged every step",
            "exact_in_loss": "(c) exact KL in the loss",
        }
        for variant, label in labels.items():
            r = overhead["results"].get(variant)
            if r is None:
                continue
            target = f"≤ {r['target']:.2f}" if r.get("target") else "record"
            measured = _spread(r["ratio"])
            if "cpu_ratio" in r:
                measured += f"; CPU time {_spread(r['cpu_ratio'])}"
            met = _met(r.get("meets_target"))
            if r.get("meets_target_cpu") is not None:
                met += f" (CPU time: {_met(r['meets_target_cpu'])})"
            rows.append([f"overhead: step time MMR1Trainer / TRL GRPOTrainer, {label}", target, measured, met,
                         _load(overhead), _when(overhead)])
        trl = overhead["results"]["trl"]["step_time_s"]
        rows.append(["overhead: TRL GRPOTrainer step time (s), the baseline", "—", _spread(trl), "—",
                     _load(overhead), _when(overhead)])
    rows += _encode_rows(results, quick)
    memory = _read(results, "memory", quick)
    if memory:
        groups = memory["config"]["groups"]
        base = groups[0]
        for g in groups:
            r = memory["results"][str(g)]
            mib = _spread(r["peak_rss_bytes"], "{:.0f}", 1 / 2**20)
            inc = r["train_increment_bytes"]["median"] / 2**20
            rows.append([f"memory: peak RSS (MiB) at G={g}, {memory['config']['per_device']} completions per device",
                         f"≤ 1.10 × G={base}",
                         (f"{mib}: ×{r['peak_ratio_vs_first']:.3f}; training adds {inc:.0f} MiB "
                          f"(×{r['train_increment_ratio_vs_first']:.2f})"),
                         _met(r["meets_target"]), _load(memory), _when(memory)])
    learning = _read(results, "learning", quick)
    if learning:
        r = learning["results"]
        seeds = len(r["seeds"])
        rows.append([f"learning: held-out accuracy after warm start → after GRPO (%), {seeds} seed(s)", "record",
                     (f"{_spread(r['accuracy_after_warmstart'], '{:.1f}', 100)} → "
                     f"{_spread(r['accuracy_after_grpo'], '{:.1f}', 100)}"), "—", _load(learning), _when(learning)])
        rows.append(["learning: gain from GRPO (points)", "record", _spread(r["gain"], "{:+.1f}", 100), "—",
                     _load(learning), _when(learning)])
        rows.append(["learning: wall time, warm start + GRPO (s, evaluations excluded)", "record",
                     f"{_spread(r['warmstart_s'], '{:.0f}')} + {_spread(r['grpo_s'], '{:.0f}')}", "—",
                     _load(learning), _when(learning)])
        if "warmstart_cpu_s" in r:
            workers = learning["config"].get("workers", 1)
            rows.append([f"learning: CPU time, warm start + GRPO (s, one thread; {workers} seed(s) at a time)",
                         "record", f"{_spread(r['warmstart_cpu_s'], '{:.0f}')} + {_spread(r['grpo_cpu_s'], '{:.0f}')}",
                         "—", _load(learning), _when(learning)])
    data = _read(results, "data", quick)
    if data:
        r = data["results"]
        rows.append([f"data: rows/s, load_dataset of {r['rows']} MMR1 JSON rows with images", "record",
                     f"{r['rows_per_second']['load']:.0f}", "—", _load(data), _when(data)])
        rows.append(["data: rows/s, decode + the trainer's two processor calls", "record",
                     (f"{r['rows_per_second']['trainer_path']:.0f} (trainer: "
                     f"{1 / r['trainer']['step_time_per_row_s']:.0f} rows/s)"), "—", _load(data), _when(data)])
        rows.append(["data: data path time / trainer step time, per row", "< 1 (never the bottleneck)",
                     f"{r['data_fraction_of_step']:.3f}", _met(not r["bottleneck"]), _load(data), _when(data)])
    exact = _read(results, "exact_kl", quick)
    if exact:
        fb = {r["method"]: r for r in exact["results"] if r["pass"] == "forward_backward"}
        chunked = [m for m in fb if m.startswith("exact[")]
        if "unchunked" in fb and chunked:
            best = min(chunked, key=lambda m: fb[m]["peak_extra_bytes"])
            rows.append([f"exact KL, V={exact['config']['vocab']}: forward+backward ms, {best} vs unchunked",
                         "record", f"{1e3 * fb[best]['median_s']:.1f} vs {1e3 * fb['unchunked']['median_s']:.1f}",
                         "—", "not recorded", _when(exact)])
    plan = _read(results, "plan", quick)
    if plan:
        target = f"within ±{plan['targets']['abs_ratio_minus_1']:.0%}"
        for case in plan["results"]["cases"]:
            gc = "on" if case["gradient_checkpointing"] else "off"
            what = (f"memory plan: training peak, estimate / measured (CPU tensor bytes), {case['size']} model "
                    f"({case['parameters'] / 1e6:.1f}M), gradient checkpointing {gc}")
            figures = (f"{case['estimate_bytes']['peak'] / 2**30:.3f} / {case['measured_bytes']['peak'] / 2**30:.3f}"
                       f" GiB = {case['ratio']:.3f}")
            rows.append([what, target, figures, _met(case["within_target"]), _load(plan), _when(plan)])
    return rows


def _encode_rows(results: Path, quick: bool) -> list[list[str]]:
    """`bench_encode`: the step-time ratio against TRL at each G, with the image work of the step."""
    encode = _read(results, "encode", quick)
    if not encode:
        return []
    rows, target = [], encode["targets"]["cpu_ratio_g8"]
    trl_preprocessed = 2 * encode["config"]["settings"]["per_device_train_batch_size"]
    for g in encode["config"]["groups"]:
        r = encode["results"][str(g)]
        v = r["vision"]
        label = (f"encode: CPU time per step, MMR1Trainer (each image encoded once) / TRL GRPOTrainer, G={g} "
                 f"({r['prompts_per_step']} prompts x {g})")
        measured = (f"{_spread(r['cpu_ratio'])}; wall step_time {_spread(r['ratio'])}; images encoded "
                    f"{v['encoded']:.0f} vs TRL's {v['encoded_by_trl']:.0f}, preprocessed {v['preprocessed']:.0f} "
                    f"vs {trl_preprocessed}")
        at_g8 = g == 8
        rows.append([label, f"≤ {target:.2f} at G=8, falling with G" if at_g8 else "falling with G", measured,
                     _met(encode["results"]["meets_target"]) if at_g8 else "—", _load(encode), _when(encode)])
    return rows


def _whole_run_row(results: Path, quick: bool) -> list[str] | None:
    run = _read(results, "run_all", quick)
    if not run:
        return None
    minutes = run["total_s"] / 60
    parts = ", ".join(f"{o['name']} {o['seconds'] / 60:.1f}" for o in run["benchmarks"])
    return [f"`make bench`: wall time of the whole run (min), {run.get('cpu_count')} cores", f"about 10 (≤ {BUDGET_MIN})",
            f"{minutes:.1f} ({parts})", _met(minutes <= BUDGET_MIN), "—", _when(run)]


def render_table(results: Path, quick: bool = False) -> str:
    header = ["measure", "target", "measured: median [min, max] (n)", "target met?",
              "load avg (1 min): start → end, max", "date"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = table_rows(results, quick)
    whole = _whole_run_row(results, quick)
    lines += ["| " + " | ".join(row) + " |" for row in rows + ([whole] if whole else [])]
    return "\n".join(lines)


def refresh_readme(readme: Path, results: Path, quick: bool = False) -> str:
    """Replace the text between the markers with the table; return the table."""
    table = render_table(results, quick)
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: missing the {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return table


def write_run_record(results: Path, quick: bool, names: list[str], outcomes: list[dict]) -> None:
    """`results/run_all.json`: how long the whole run took, benchmark by benchmark (`make bench` should take about
    10 minutes). Only a run of every benchmark is recorded; a subset (`--only`, `--skip`) is not what `make bench`
    runs."""
    if set(names) != set(BENCHMARKS):
        return
    record = {"benchmark": "run_all", "quick": quick, "created": time.time(),
              "total_s": round(sum(o["seconds"] for o in outcomes), 1), "benchmarks": outcomes,
              "cpu_count": os.cpu_count()}
    path = result_path(results, "run_all", quick)
    path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv=None):
    args = parse_args(argv)
    results, readme = Path(args.results), Path(args.readme)
    results.mkdir(parents=True, exist_ok=True)
    outcomes = []
    if not args.table_only:
        names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
        for name in names:
            outcomes.append(run_benchmark(name, args.quick, results, args.wait_quiet))
        for o in outcomes:
            print(f"{o['name']:>10}: {'ok' if o['returncode'] == 0 else 'FAILED'} in {o['seconds']:.0f} s")
        write_run_record(results, args.quick, names, outcomes)
    if args.quick and not args.table_only:
        print(render_table(results, quick=True))
    else:
        print(refresh_readme(readme, results))
    failed = [o["name"] for o in outcomes if o["returncode"] != 0]
    if failed:
        raise SystemExit(f"benchmark(s) failed: {failed}")


if __name__ == "__main__":
    main()
