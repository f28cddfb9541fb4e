"""The `mmr1kit` command.

    mmr1kit run NOTEBOOK [-p NAME VALUE]... [-f PRESET] [--run-dir DIR] [--kernel K] [--resume]
    mmr1kit sweep NOTEBOOK --grid NAME=V1,V2 [--grid ...] [-p NAME VALUE]... [-f PRESET] [--jobs N] [--sweep-dir DIR]
    mmr1kit report RUN_DIR
    mmr1kit params NOTEBOOK

Exit codes: 0 success; 1 a notebook (or a sweep point) failed; 2 bad arguments or parameters.
stdout carries the results (the run or sweep folder is the last line); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mmr1kit import notebook as nbrun
from mmr1kit import sweep as sweeps


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("notebook", type=Path, help="the notebook to execute")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a notebook parameter; VALUE is converted to the type of its default (repeatable)")
    parser.add_argument("-f", "--preset", help="YAML preset (a mapping of parameter names to values) or NAME for "
                        "configs/NAME.yaml; -p values override it")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--cwd", type=Path, help="working directory of the kernel (default: the repository root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmr1kit", description="Notebook-first GRPO workbench for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute a notebook into a run folder and render its HTML report")
    _add_run_options(run)
    run.add_argument("--run-dir", type=Path, help="run folder (default: the notebook's own run_dir default, relative "
                     "to the project root, as in JupyterLab; else runs/<notebook>-<YYYYmmdd-HHMMSS>)")
    run.add_argument("--resume", action="store_true",
                     help="set resume_from_checkpoint=True (the notebook must declare it; needs the run folder)")
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
        parameters["resume_from_checkpoint"] = True
    run_dir = args.run_dir if args.run_dir is not None else _notebook_run_dir(args, parameters)
    result = nbrun.run_notebook(args.notebook, parameters=parameters, preset=args.preset, run_dir=run_dir,
                                kernel_name=args.kernel, cwd=args.cwd, log_output=not args.quiet,
                                progress=not args.quiet, execution_timeout=args.execution_timeout)
    print(f"notebook: {result.notebook}")
    print(f"report:   {result.html}")
    print(f"time:     {result.wall_time_s:.1f} s")
    print(result.run_dir)
    return 0


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
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
