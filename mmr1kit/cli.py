"""The `mmr1kit` command.

    mmr1kit run NOTEBOOK [-p NAME VALUE]... [-f PRESET] [--run-dir DIR] [--kernel K] [--resume [--allow-change NAME]...]
                 [--overwrite]
    mmr1kit sweep NOTEBOOK --grid NAME=V1,V2 [--grid ...] [-p NAME VALUE]... [-f PRESET] [--jobs N] [--sweep-dir DIR]
                  [--gpus-per-job K] [--submit slurm [--partition P] [--time T] [--sbatch-arg=ARG]...]
    mmr1kit sweep --status SWEEP_DIR | --resume SWEEP_DIR
    mmr1kit report RUN_DIR
    mmr1kit params NOTEBOOK
    mmr1kit plan PRESET [--gpus N] [--gpu-mem GiB] [--zero K]   (exit 1 when the run will not fit)
    mmr1kit replay RUN [--step N] [--grid NAME=V1,V2]... [--out DIR]   (a run trained with capsule_every > 0)

Exit codes: 0 success; 1 a notebook (or a sweep point) failed; 2 bad arguments or parameters (one line each, checked
before anything runs: `mmr1kit.preflight`), or a job Slurm refused; 130 stopped by Ctrl-C (training stops at the end
of a step with a checkpoint; the command that resumes is printed).
stdout carries the results (the run or sweep folder is the last line); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from mmr1kit import notebook as nbrun
from mmr1kit import slurm_sweep as slurm
from mmr1kit import sweep as sweeps
from mmr1kit.slurm import SlurmError


class _Parser(argparse.ArgumentParser):
    """Reads `-p learning_rate -1e-4` as a value: before Python 3.13, argparse took `-1e-4` for an option (only
    `-1` and `-1.5` looked like negative numbers to it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _add_run_options(parser: argparse.ArgumentParser, notebook_nargs: str | None = None) -> None:
    parser.add_argument("notebook", type=Path, nargs=notebook_nargs, help="the notebook to execute")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a notebook parameter; VALUE is converted to the type of its default (repeatable)")
    parser.add_argument("-f", "--preset", help="YAML preset (a mapping of parameter names to values) or NAME for "
                        "configs/NAME.yaml; -p values override it")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--cwd", type=Path, help="working directory of the kernel (default: the repository root)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmr1kit", description="Notebook-first GRPO workbench for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute a notebook into a run folder and render its HTML report")
    _add_run_options(run)
    run.add_argument("--run-dir", type=Path, help="run folder (default: the notebook's own run_dir default, relative "
                     "to the project root, as in JupyterLab; else runs/<notebook>-<YYYYmmdd-HHMMSS>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --run-dir with the parameters of its executed notebook (the notebook "
                          "must declare resume_from_checkpoint); -p values that differ from them need --allow-change")
    run.add_argument("--allow-change", action="append", default=[], metavar="NAME",
                     help="with --resume: a parameter (or MMR1Config field) that may differ from the run's (repeatable)")
    run.add_argument("--overwrite", action="store_true",
                     help="move a run already in --run-dir aside to <run-dir>.old-<YYYYmmdd-HHMMSS> and start afresh")
    run.add_argument("--execution-timeout", type=int, help="seconds allowed per cell")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no cell output on stderr")
    run.set_defaults(func=_cmd_run)

    swp = sub.add_parser("sweep", help="run a notebook over the cartesian product of parameter grids")
    _add_run_options(swp, notebook_nargs="?")
    swp.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                     help="values of one parameter (repeatable; the sweep runs every combination)")
    swp.add_argument("--jobs", type=int, help="points run at once (default: 1; with --gpus-per-job: as many as the "
                     "GPUs allow; with --submit slurm: no limit)")
    swp.add_argument("--sweep-dir", type=Path, help="sweep folder (default: runs/<notebook>-sweep-<YYYYmmdd-HHMMSS>)")
    swp.add_argument("--no-compare", action="store_true", help="skip the comparison report (notebook 05)")
    swp.add_argument("--gpus-per-job", type=int, metavar="K", help="each running point gets its own K GPUs "
                     "(CUDA_VISIBLE_DEVICES); with --submit slurm, --gpus=K per array task")
    swp.add_argument("--submit", choices=["slurm"], help="submit one Slurm job array (a task per point) and a job "
                     "that renders the comparison report after it, instead of running here")
    swp.add_argument("--partition", help="Slurm partition (--submit slurm, --resume)")
    swp.add_argument("--time", help="Slurm time limit of each point, e.g. 2:00:00 (--submit slurm, --resume)")
    swp.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                     help="another sbatch option for the jobs, e.g. --sbatch-arg=--account=A (repeatable)")
    done = swp.add_mutually_exclusive_group()
    done.add_argument("--status", type=Path, metavar="SWEEP_DIR", help="show each point's state (run folders and "
                      "scheduler) and exit")
    done.add_argument("--resume", type=Path, metavar="SWEEP_DIR", help="resubmit the failed, stopped and never "
                      "started points of a Slurm sweep (from their last checkpoint) and a new report job")
    swp.set_defaults(func=_cmd_sweep)

    report = sub.add_parser("report", help="re-render the HTML report of every executed notebook in a run folder")
    report.add_argument("run_dir", type=Path, help="a run folder (or a sweep folder)")
    report.set_defaults(func=_cmd_report)

    params = sub.add_parser("params", help="list a notebook's parameters (name, type, default, help)")
    params.add_argument("notebook", type=Path)
    params.set_defaults(func=_cmd_params)

    from mmr1kit.plan import add_command as add_plan_command

    add_plan_command(sub)  # `mmr1kit plan PRESET`: per-device GPU memory, before any model is loaded
    from mmr1kit.replay import add_command as add_replay_command

    add_replay_command(sub)  # `mmr1kit replay RUN --step N --grid NAME=V1,V2`: one batch under other objectives

    # --- Subcommands added by the lead go here: `mmr1kit build-model` and `mmr1kit data`. ---
    # Pattern: p = sub.add_parser("build-model", help=...); p.add_argument(...); p.set_defaults(func=_cmd_build_model)
    # where `_cmd_build_model(args) -> int` returns the exit code. ValueError → exit 2 is handled in `main`.

    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    parameters = dict(args.parameter)
    run_dir = args.run_dir if args.run_dir is not None else _notebook_run_dir(args, parameters)
    if args.resume:
        declared = nbrun.notebook_parameters(args.notebook)
        if "resume_from_checkpoint" not in declared:
            raise ValueError(f"--resume: {args.notebook} declares no 'resume_from_checkpoint' parameter; "
                             f"valid: {', '.join(declared)}")
        target = run_dir or parameters.get("run_dir")
        if target is None or not Path(target).is_dir():
            raise ValueError(f"--resume needs the existing folder of the run to resume: pass --run-dir DIR "
                             f"(got {target})")
    elif args.allow_change:
        raise ValueError("--allow-change goes with --resume")
    try:
        result = nbrun.run_notebook(args.notebook, parameters=parameters, preset=args.preset, run_dir=run_dir,
                                    kernel_name=args.kernel, cwd=args.cwd, log_output=not args.quiet,
                                    progress=not args.quiet, execution_timeout=args.execution_timeout,
                                    resume=args.resume, overwrite=args.overwrite, allow_changes=tuple(args.allow_change))
    except nbrun.NotebookInterrupted as stop:
        print(_stopped_line(args, stop.run_dir), file=sys.stderr)
        print(f"report:   {stop.html}", file=sys.stderr)
        return 130
    print(f"notebook: {result.notebook}")
    print(f"report:   {result.html}")
    print(f"time:     {result.wall_time_s:.1f} s")
    print(result.run_dir)
    return 0


def _stopped_line(args: argparse.Namespace, run_dir: Path) -> str:
    """`stopped at step 7 of 100 (Ctrl-C); resume with: mmr1kit run ... --resume`, from what the run left."""
    from mmr1kit.interrupt import describe_stop
    from mmr1kit.run_folder import run_record

    again = ["mmr1kit", "run", str(args.notebook), "--run-dir", str(args.run_dir or run_dir)]
    again += [*(["--kernel", args.kernel] if args.kernel != "python3" else []),
              *(["--cwd", str(args.cwd)] if args.cwd else [])]
    if "resume_from_checkpoint" not in nbrun.notebook_parameters(args.notebook):  # a notebook that trains nothing
        return "stopped by Ctrl-C (the notebook trains nothing: nothing to resume)"
    stop = describe_stop(run_dir)
    if stop["checkpoint"]:
        return (f"stopped at step {stop['step']} of {stop['max_steps']} (Ctrl-C); resume with: "
                f"{shlex.join([*again, '--resume'])}")
    if run_record(run_dir):
        return f"stopped by Ctrl-C before the first checkpoint; start again with: {shlex.join([*again, '--overwrite'])}"
    return f"stopped by Ctrl-C before training started; start again with: {shlex.join(again)}"


def _notebook_run_dir(args: argparse.Namespace, parameters: dict) -> Path | None:
    """Without `--run-dir`, the folder the notebook writes to by itself: its own `run_dir` default, relative to the
    kernel's working directory (the project root), exactly as Run All in JupyterLab uses it. So the notebooks chain
    with their defaults (01 writes `runs/smoke`, which 02, 03 and 05 read). `None` (a dated folder, see
    `run_notebook`) when `-p run_dir` or the preset's `run_dir` decide, or the notebook declares no default."""
    declared = nbrun.notebook_parameters(args.notebook)
    if "run_dir" in parameters or "run_dir" not in declared:
        return None
    cwd = args.cwd.resolve() if args.cwd is not None else nbrun._repo_root(args.notebook.resolve())
    if args.preset is not None and "run_dir" in nbrun.load_preset(args.preset, cwd)[0]:
        return None
    default = ast.literal_eval(declared["run_dir"]["default"])
    return cwd / default if isinstance(default, str) and default else None


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.status or args.resume:
        return _cmd_sweep_slurm(args)
    if args.notebook is None or not args.grid:
        raise ValueError("mmr1kit sweep needs a NOTEBOOK and at least one --grid NAME=V1,V2 (or --status / --resume "
                         "SWEEP_DIR)")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if not args.submit and (args.partition or args.time or args.sbatch_arg):
        raise ValueError("--partition, --time and --sbatch-arg go with --submit slurm")
    declared = nbrun.notebook_parameters(args.notebook)
    grid = {}
    for spec in args.grid:
        name, values = sweeps.parse_grid(spec, declared, notebook=args.notebook)
        if name in grid:
            raise ValueError(f"--grid {name!r} given twice")
        grid[name] = values
    if args.submit:
        return _cmd_sweep_slurm(args, grid)
    result = sweeps.sweep(args.notebook, grid, parameters=dict(args.parameter), sweep_dir=args.sweep_dir,
                          jobs=args.jobs or (None if args.gpus_per_job else 1), preset=args.preset,
                          kernel_name=args.kernel, cwd=args.cwd, gpus_per_job=args.gpus_per_job)
    width = max(len(p.name) for p in result.points)
    print(f"{'point':<{width}}  {'status':<9}  {'time_s':>7}  error")
    for p in result.points:
        wall = f"{p.wall_time_s:.1f}" if p.wall_time_s is not None else "-"
        print(f"{p.name:<{width}}  {p.status:<9}  {wall:>7}  {p.error or ''}")
    failed = len(result.failed)
    print(f"{len(result.points) - failed} succeeded, {failed} failed; records in {result.sweep_dir / 'sweep.json'}")
    if failed < len(result.points) and not args.no_compare:
        from mmr1kit.compare import compare_report

        try:
            report = compare_report(result.sweep_dir, kernel_name=args.kernel)
            print(f"comparison: {report.html}")
        except nbrun.NotebookRunError as e:
            print(f"warning: the comparison report failed: {e}", file=sys.stderr)
    print(result.sweep_dir)
    return 1 if failed else 0


def _cmd_sweep_slurm(args: argparse.Namespace, grid: dict | None = None) -> int:
    """`--submit slurm`, `--status`, `--resume` (mmr1kit.slurm)."""
    if args.status:
        result = sweeps.load_sweep(args.status)
        states = slurm.point_states(result)
        print("\n".join(slurm.format_states(result, states)))
        print(result.sweep_dir)
        return 0
    if args.resume:
        entry = slurm.resume_sweep(args.resume, partition=args.partition, gpus_per_job=args.gpus_per_job,
                                   time_limit=args.time, sbatch_args=args.sbatch_arg)
        result = sweeps.load_sweep(args.resume)
    else:
        result = slurm.submit_sweep(args.notebook, grid, parameters=dict(args.parameter), sweep_dir=args.sweep_dir,
                                    preset=args.preset, cwd=args.cwd, kernel_name=args.kernel,
                                    partition=args.partition, gpus_per_job=args.gpus_per_job, time_limit=args.time,
                                    sbatch_args=args.sbatch_arg, jobs=args.jobs, compare=not args.no_compare)
        entry = result.record["slurm"]["submissions"][-1]
    if entry is None:
        print("nothing to resubmit: no point failed, stopped or is left to start")
    else:
        names = ", ".join(result.points[i].name for i in entry["indices"])
        print(f"submitted: job array {entry['array_job']} ({len(entry['indices'])} point(s): {names}); "
              f"report job {entry['report_job']} after it (afterany)")
        print(f"logs: {result.sweep_dir / 'slurm' / 'logs'}; state: mmr1kit sweep --status {result.sweep_dir}")
    print(result.sweep_dir)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    for executed in nbrun.find_executed_notebooks(args.run_dir):
        print(nbrun.render_html(executed))
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    declared = nbrun.notebook_parameters(args.notebook)
    print(f"Parameters of {args.notebook}:")
    rows = [(name, nbrun.parameter_type(info), info["default"], info["help"])
            for name, info in declared.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    for name, type_name, default, help_text in rows:
        line = f"  {name:<{widths[0]}}  {type_name:<{widths[1]}}  {default:<{widths[2]}}  {help_text}"
        print(line.rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mmr1kit` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except nbrun.NotebookRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, SlurmError) as exc:
        for line in str(exc).splitlines():  # one line per problem
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped by Ctrl-C", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
