"""The `mmr1kit` command.

    mmr1kit run NOTEBOOK [-p NAME VALUE]... [-f PRESET] [--run-dir DIR] [--kernel K] [--resume [--allow-change NAME]...]
                 [--overwrite]
    mmr1kit sweep NOTEBOOK --grid NAME=V1,V2 [--grid ...] [-p NAME VALUE]... [-f PRESET] [--jobs N] [--sweep-dir DIR]
    mmr1kit report RUN_DIR
    mmr1kit params NOTEBOOK
    mmr1kit plan PRESET [--gpus N] [--gpu-mem GiB] [--zero K]   (exit 1 when the run will not fit)
    mmr1kit replay RUN [--step N] [--grid NAME=V1,V2]... [--out DIR]   (a run trained with capsule_every > 0)

Exit codes: 0 success; 1 a notebook (or a sweep point) failed; 2 bad arguments or parameters (one line each, checked
before anything runs: `mmr1kit.preflight`); 130 stopped by Ctrl-C (training stops at the end of a step with a
checkpoint; the command that resumes is printed).
stdout carries the results (the run or sweep folder is the last line); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from mmr1kit import notebook as nbrun
from mmr1kit import sweep as sweeps


class _Parser(argparse.ArgumentParser):
    """Reads `-p learning_rate -1e-4` as a value: before Python 3.13, argparse took `-1e-4` for an option (only
    `-1` and `-1.5` looked like negative numbers to it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", type=Path, help="the notebook to execute")
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
    run.add_argument("--run-dir", type=Path, help="run folder (default: runs/<notebook>-<YYYYmmdd-HHMMSS>)")
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
    _add_run_options(swp)
    swp.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2",
                     help="values of one parameter (repeatable; the sweep runs every combination)")
    swp.add_argument("--jobs", type=int, default=1, help="points run at once (default: 1)")
    swp.add_argument("--sweep-dir", type=Path, help="sweep folder (default: runs/<notebook>-sweep-<YYYYmmdd-HHMMSS>)")
    swp.add_argument("--no-compare", action="store_true", help="skip the comparison report (notebook 05)")
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
    if args.resume:
        declared = nbrun.notebook_parameters(args.notebook)
        if "resume_from_checkpoint" not in declared:
            raise ValueError(f"--resume: {args.notebook} declares no 'resume_from_checkpoint' parameter; "
                             f"valid: {', '.join(declared)}")
        run_dir = args.run_dir or parameters.get("run_dir")
        if run_dir is None or not Path(run_dir).is_dir():
            raise ValueError(f"--resume needs the existing folder of the run to resume: pass --run-dir DIR "
                             f"(got {run_dir})")
    elif args.allow_change:
        raise ValueError("--allow-change goes with --resume")
    try:
        result = nbrun.run_notebook(args.notebook, parameters=parameters, preset=args.preset, run_dir=args.run_dir,
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


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    declared = nbrun.notebook_parameters(args.notebook)
    grid = {}
    for spec in args.grid:
        name, values = sweeps.parse_grid(spec, declared, notebook=args.notebook)
        if name in grid:
            raise ValueError(f"--grid {name!r} given twice")
        grid[name] = values
    result = sweeps.sweep(args.notebook, grid, parameters=dict(args.parameter), sweep_dir=args.sweep_dir,
                         jobs=args.jobs, preset=args.preset, kernel_name=args.kernel, cwd=args.cwd)
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
    except (ValueError, FileNotFoundError) as exc:
        for line in str(exc).splitlines():  # one line per problem
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped by Ctrl-C", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
