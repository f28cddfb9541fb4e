"""Tests for the `mmr1kit` command: exit codes and output of run / sweep / report / params."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmr1kit.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
SUMMARY_NB = str(FIXTURES / "write_summary.ipynb")
FAILING_NB = str(FIXTURES / "fails_third_cell.ipynb")


def test_params_lists_name_type_default_and_help(capsys):
    assert main(["params", SUMMARY_NB]) == 0
    out = capsys.readouterr().out
    assert "write_summary.ipynb" in out.splitlines()[0]
    lr = next(line for line in out.splitlines() if line.split()[0] == "lr")
    assert lr.split() == ["lr", "float", "0.001", "a", "float"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", FAILING_NB, "-p", "lr", "1"], "unknown parameter 'lr' for"),  # typo in a name
        (["run", FAILING_NB, "-p", "x", "one"], "parameter 'x' of"),  # not an int
        (["run", FAILING_NB, "--resume", "--run-dir", "."], "declares no 'resume_from_checkpoint'"),
        (["run", SUMMARY_NB, "--resume"], "--resume needs the existing folder"),
        (["sweep", SUMMARY_NB, "--grid", "n=1,x"], "parameter 'n' of"),
        (["sweep", SUMMARY_NB, "--grid", "n"], "must look like 'name=v1,v2,v3'"),
        (["sweep", SUMMARY_NB, "--grid", "n=1", "--jobs", "0"], "--jobs must be at least 1"),
        (["report", "does/not/exist"], "does not exist"),
        (["params", "missing.ipynb"], "missing.ipynb"),
    ],
)
def test_bad_arguments_exit_2_before_running(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # a run that started by mistake would leave runs/ here
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert not (tmp_path / "runs").exists()


def test_run_without_run_dir_uses_the_notebooks_own_default(tmp_path):
    """As Run All in JupyterLab: the notebook's run_dir default, relative to the project root (the kernel's working
    directory); -p run_dir and a preset's run_dir are left to run_notebook; no default means a dated folder."""
    from mmr1kit.cli import _notebook_run_dir, build_parser

    root = Path(__file__).resolve().parent.parent

    def resolved(*argv):
        args = build_parser().parse_args(["run", SUMMARY_NB, *argv])
        return _notebook_run_dir(args, dict(args.parameter))

    assert resolved() == root / "runs" / "fixture-summary"
    assert resolved("--cwd", str(tmp_path)) == tmp_path / "runs" / "fixture-summary"
    assert resolved("-p", "run_dir", "elsewhere") is None
    preset = tmp_path / "p.yaml"
    preset.write_text("run_dir: from-preset\n")
    assert resolved("-f", str(preset)) is None
    preset.write_text("n: 2\n")
    assert resolved("-f", str(preset)) == root / "runs" / "fixture-summary"


def test_unknown_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`mmr1kit run --resume` into an existing run folder, in-process."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    run_dir.mkdir()
    argv = ["run", SUMMARY_NB, "-p", "n", "2", "-p", "widths", "[5]", "--run-dir", str(run_dir), "--resume", "-q"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(argv)
    return run_dir, code, out.getvalue()


@pytest.mark.slow
def test_run_prints_run_dir_last_and_exits_0(cli_run):
    run_dir, code, stdout = cli_run
    assert code == 0 and stdout.splitlines()[-1] == str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["n"], summary["widths"], summary["resume_from_checkpoint"]) == (2, [5], True)
    assert (run_dir / "write_summary.html").is_file()


@pytest.mark.slow
def test_console_script_on_failing_notebook_exits_1(tmp_path):
    # the installed console script, in a subprocess, on the failing notebook: exit 1 with a one-paragraph error
    script = Path(sys.executable).parent / "mmr1kit"
    script = str(script) if script.exists() else shutil.which("mmr1kit")
    run_dir = tmp_path / "fail"
    proc = subprocess.run([script, "run", FAILING_NB, "--run-dir", str(run_dir), "-q"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert "failed in code cell 3" in error and "RuntimeError: boom on purpose" in error
    assert "fails_third_cell.ipynb;" in error and "fails_third_cell.html;" in error
    assert (run_dir / "fails_third_cell.ipynb").is_file() and (run_dir / "fails_third_cell.html").is_file()


@pytest.mark.slow
def test_report_rerenders_every_notebook(cli_run, capsys):
    run_dir, _, _ = cli_run
    html = run_dir / "write_summary.html"
    html.unlink()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(html)]
    assert "data:image/png;base64," in html.read_text()


@pytest.mark.slow
def test_sweep_prints_table_and_exits_1_when_a_point_fails(tmp_path, capsys):
    sweep_dir = tmp_path / "sw"
    code = main(["sweep", SUMMARY_NB, "--grid", "n=1,2", "-p", "fail_on_n", "2", "--sweep-dir", str(sweep_dir),
                 "--jobs", "2"])  # the process pool (spawn)
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == str(sweep_dir)
    assert lines[0].split() == ["point", "status", "time_s", "error"]
    assert lines[1].split()[:2] == ["n=1", "succeeded"]
    assert lines[2].split()[:3] == ["n=2", "failed", lines[2].split()[2]] and "n=2 fails on purpose" in lines[2]
    assert "1 succeeded, 1 failed" in lines[3]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["status"] for p in record["points"]] == ["succeeded", "failed"]
