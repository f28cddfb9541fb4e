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
from mmr1kit.train import cli as train_cli

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
SUMMARY_NB = str(FIXTURES / "write_summary.ipynb")
FAILING_NB = str(FIXTURES / "fails_third_cell.ipynb")
TRAIN_NB = str(Path(__file__).resolve().parent.parent / "notebooks" / "01_train_grpo.ipynb")


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
        # checked before the kernel starts (mmr1kit.preflight), in MMR1Config's words; negative numbers are values
        (["run", TRAIN_NB, "-p", "learning_rate", "-1e-4"], "error: MMR1Config.learning_rate=-0.0001: must be > 0"),
        (["run", TRAIN_NB, "-p", "kl_approximator", "k5"], "error: MMR1Config.kl_approximator='k5': expected one of"),
        (["run", TRAIN_NB, "-p", "dataset", "data_cards/missing.md"],
         "error: MMR1Config.dataset='data_cards/missing.md': no such file, folder or data card"),
        (["run", TRAIN_NB, "-p", "task", "cnt", "-p", "eval_size", "0"],
         ("error: parameter task='cnt' of 01_train_grpo.ipynb: expected one of counting, math, grounding, ocr, "
          "detection, auto\nerror: parameter eval_size=0 of 01_train_grpo.ipynb: must be >= 1\n")),
        (["run", TRAIN_NB, "-p", "config_overrides", "{lerning_rate: 0.1}"],
         "error: MMR1Config: unknown field(s) 'lerning_rate' (did you mean learning_rate"),
        (["sweep", TRAIN_NB, "--grid", "learning_rate=1e-4,-1e-4", "--grid", "seed=0,1"],
         "error: grid point learning_rate=-0.0001,seed=0: MMR1Config.learning_rate=-0.0001: must be > 0\n"),
        (["run", SUMMARY_NB, "--allow-change", "n"], "--allow-change goes with --resume"),
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


def test_the_same_line_from_every_entry_point(tmp_path, monkeypatch, capsys):
    from mmr1kit.config import MMR1Config

    monkeypatch.chdir(tmp_path)
    line = "MMR1Config.learning_rate=-0.0001: must be > 0"
    with pytest.raises(ValueError) as info:
        MMR1Config(learning_rate=-1e-4)  # the Python API
    assert str(info.value) == line
    assert train_cli(["--learning_rate", "-1e-4"]) == 2  # python -m mmr1kit.train
    assert main(["run", TRAIN_NB, "-p", "learning_rate", "-1e-4"]) == 2
    assert main(["sweep", TRAIN_NB, "--grid", "seed=0,1", "-p", "learning_rate", "-1e-4"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {line}", f"error: {line}",
                                                    f"error: grid point seed=0: {line}"]
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_train_help_fits_on_a_screen(capsys):
    assert train_cli(["--help"]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) <= 30 and "CONFIG.yaml" in text and "--resume_from_checkpoint" in text


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run of the fixture notebook, then `mmr1kit run --resume` of it without parameters, in-process."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    argv = ["run", SUMMARY_NB, "-p", "n", "2", "-p", "widths", "[5]", "--run-dir", str(run_dir), "-q"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["run", SUMMARY_NB, "--run-dir", str(run_dir), "--resume", "-q"])
    return run_dir, code, out.getvalue()


@pytest.mark.slow
def test_run_prints_run_dir_last_and_exits_0(cli_run):
    run_dir, code, stdout = cli_run
    assert code == 0 and stdout.splitlines()[-1] == str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    # resumed with the parameters of the run's executed notebook, not the notebook's defaults (n=3, widths=[1, 2])
    assert (summary["n"], summary["widths"], summary["resume_from_checkpoint"]) == (2, [5], True)
    assert (run_dir / "write_summary.html").is_file()


@pytest.mark.slow
def test_one_run_per_folder_and_resume_refuses_a_changed_parameter(cli_run, capsys):
    run_dir, _, _ = cli_run
    before = (run_dir / "summary.json").read_text()
    assert main(["run", SUMMARY_NB, "--run-dir", str(run_dir), "-q"]) == 2
    assert main(["run", SUMMARY_NB, "--run-dir", str(run_dir), "--resume", "-p", "n", "4", "-q"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        (f"error: run folder {run_dir} already holds a run (summary.json): resume it with --resume, choose another "
         f"--run-dir, or pass --overwrite to move it aside to run.old-<YYYYmmdd-HHMMSS>"),
        (f"error: resume: n=4 differs from the run's n=2 ({run_dir / 'write_summary.ipynb'}); leave it out to "
         f"continue the run as it was, or allow the change with --allow-change n")]
    assert (run_dir / "summary.json").read_text() == before  # refused before anything ran

    with contextlib.redirect_stdout(io.StringIO()):  # an explicit overwrite: the old run is moved aside, whole
        assert main(["run", SUMMARY_NB, "--run-dir", str(run_dir), "-p", "n", "7", "--overwrite", "-q"]) == 0
    [old] = run_dir.parent.glob("run.old-*")
    assert (old / "summary.json").read_text() == before and (old / "write_summary.html").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["n"] == 7


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
