"""Tests for `mmr1kit.notebook`: real papermill runs of the fixture notebooks, sweeps and helpers."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from mmr1kit.notebook import (
    NotebookRunError,
    _default_run_dir,
    find_executed_notebooks,
    notebook_parameters,
    render_html,
    run_notebook,
    use_project_root,
)
from mmr1kit.progress import HEADLESS_ENV
from mmr1kit.runs import write_json
from mmr1kit.sweep import _point_name, parse_grid, sweep

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
SUMMARY_NB = FIXTURES / "write_summary.ipynb"
FAILING_NB = FIXTURES / "fails_third_cell.ipynb"
QUIET = {"kernel_name": "python3", "log_output": False, "progress": False}


# ---------------------------------------------------------------------------------------------------------------
# Fixture notebooks are committed clean


@pytest.mark.parametrize("path", [SUMMARY_NB, FAILING_NB], ids=lambda p: p.name)
def test_fixture_notebooks_are_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"
    assert "import torch" not in "".join(c.source for c in code)


def test_run_notebook_checks_parameters_before_executing(tmp_path):
    run_dir = tmp_path / "never"
    with pytest.raises(ValueError, match="unknown parameter 'lr' .* valid: run_dir, x"):
        run_notebook(FAILING_NB, parameters={"lr": "1"}, run_dir=run_dir, **QUIET)
    with pytest.raises(ValueError, match="parameter 'x' .* 'one' as int"):
        run_notebook(FAILING_NB, parameters={"x": "one"}, run_dir=run_dir, **QUIET)
    assert not run_dir.exists()


def test_parse_grid_splits_and_coerces():
    declared = notebook_parameters(SUMMARY_NB)
    assert parse_grid("n=1,2,3", declared) == ("n", [1, 2, 3])
    assert parse_grid("lr = 1e-5, 0.1", declared) == ("lr", [1e-5, 0.1])
    assert parse_grid("widths=[1, 2],[3]", declared) == ("widths", [[1, 2], [3]])
    assert parse_grid("name=a,b") == ("name", ["a", "b"])  # without declarations: strings
    with pytest.raises(ValueError, match="must look like 'name=v1,v2,v3'"):
        parse_grid("n", declared)
    with pytest.raises(ValueError, match="parameter 'n' .* 'x' as int"):
        parse_grid("n=1,x", declared, notebook=SUMMARY_NB)


def test_sweep_validates_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter 'm'"):
        sweep(SUMMARY_NB, {"m": [1]}, sweep_dir=tmp_path / "s")
    with pytest.raises(ValueError, match="do not set run_dir"):
        sweep(SUMMARY_NB, {"n": [1]}, parameters={"run_dir": "x"}, sweep_dir=tmp_path / "s")
    with pytest.raises(ValueError, match="both in the grid and as a parameter"):
        sweep(SUMMARY_NB, {"n": [1]}, parameters={"n": 2}, sweep_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_helpers(tmp_path):
    assert _point_name({"name": "a/b c", "widths": [1, 2]}) == "name=a_b_c,widths=_1,2_"
    path = write_json(tmp_path / "x.json", {"a": Path("p")})
    assert json.loads(path.read_text()) == {"a": "p"} and not (tmp_path / "x.json.tmp").exists()
    assert re.fullmatch(r"runs/write_summary-\d{8}-\d{6}(-\d+)?", _default_run_dir(SUMMARY_NB).as_posix())
    with pytest.raises(FileNotFoundError, match="no executed notebook"):
        find_executed_notebooks(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Real executions


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    preset = tmp / "preset.yaml"
    preset.write_text("lr: 0.5\nuse_bias: true\nbeta: 0.04\n")  # beta is not a parameter: into config_overrides
    result = run_notebook(SUMMARY_NB, parameters={"n": "5", "lr": "1e-5", "widths": "[3, 4]", "name": "x y"},
                          preset=preset, run_dir=tmp / "run", cwd=tmp, **QUIET)
    return tmp, result


@pytest.mark.slow
def test_run_notebook_injects_parameters_and_renders_html(summary_run):
    tmp, result = summary_run
    assert result.run_dir == tmp / "run" and result.notebook == tmp / "run" / "write_summary.ipynb"
    assert result.parameters["run_dir"] == str(tmp / "run") and result.wall_time_s > 0
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary == {"n": 5, "lr": 1e-5, "use_bias": True, "name": "x y", "widths": [3, 4],
                       "resume_from_checkpoint": False, "config_overrides": {"beta": 0.04}, "cwd": str(tmp)}
    executed = nbformat.read(result.notebook, as_version=4)
    assert "injected-parameters" in executed.cells[2].metadata.tags  # right after the parameters cell
    html = result.html.read_text()
    assert result.html == tmp / "run" / "write_summary.html"
    assert "data:image/png;base64," in html  # standalone: the figure is embedded


@pytest.mark.slow
def test_render_html_rerenders_a_run(summary_run):
    _, result = summary_run
    result.html.unlink()
    assert find_executed_notebooks(result.run_dir) == [result.notebook]
    assert render_html(result.notebook) == result.html
    assert "data:image/png;base64," in result.html.read_text()


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("failing") / "run"
    with pytest.raises(NotebookRunError) as info:
        run_notebook(FAILING_NB, parameters={"x": "4"}, run_dir=run_dir, **QUIET)
    return info.value


@pytest.mark.slow
def test_failing_notebook_raises_with_partial_notebook_and_html(failed_run):
    error = failed_run
    assert (error.code_cell, error.exec_count, error.ename) == (3, 4, "RuntimeError")
    assert error.evalue == "boom on purpose, y=5"
    assert "RuntimeError" in error.traceback[-1]
    assert error.output_notebook.is_file() and error.html.is_file()
    message = str(error)
    for part in ("fails_third_cell.ipynb failed in code cell 3", "RuntimeError: boom on purpose",
                 error.output_notebook.name, error.html.name):
        assert part in message
    cells = nbformat.read(error.output_notebook, as_version=4).cells
    markers = [i for i, c in enumerate(cells) if "papermill-error-cell-tag" in c.metadata.get("tags", [])]
    assert markers[0] == 0 and "boom on purpose" in str(cells[markers[1] + 1].outputs)
    assert not any(o.get("text") == "never reached\n" for c in cells if c.cell_type == "code" for o in c.outputs)
    html = error.html.read_text()
    assert 'id="papermill-error-cell"' in html and "boom on purpose" in html


@pytest.mark.slow
def test_sweep_runs_every_point_and_records_failures(tmp_path):
    result = sweep(SUMMARY_NB, {"n": ["1", "2"], "fail_on_n": [2, 9]}, parameters={"name": "sw"},
                   sweep_dir=tmp_path / "sw")  # jobs=1 here; tests/test_cli.py runs the process pool
    status = {p.name: p.status for p in result.points}
    assert status == {"n=1,fail_on_n=2": "succeeded", "n=1,fail_on_n=9": "succeeded",
                      "n=2,fail_on_n=2": "failed", "n=2,fail_on_n=9": "succeeded"}
    [failed] = result.failed
    assert failed.error == "ValueError: n=2 fails on purpose (code cell 3)"
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert record["grid"] == {"n": [1, 2], "fail_on_n": [2, 9]} and record["parameters"] == {"name": "sw"}
    assert [p["status"] for p in record["points"]] == [p.status for p in result.points]
    for point in record["points"]:
        assert Path(point["html"]).is_file() and point["wall_time_s"] > 0
    ok = json.loads((tmp_path / "sw" / "n=2,fail_on_n=9" / "summary.json").read_text())
    assert (ok["n"], ok["name"]) == (2, "sw")
    assert len(find_executed_notebooks(tmp_path / "sw")) == 4


# ------------------------------------------------------------------------------------------- use_project_root

@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def test_use_project_root_moves_a_jupyterlab_kernel_to_the_root(project, capsys):
    assert use_project_root() == project and os.getcwd() == str(project)
    assert "the project root" in capsys.readouterr().out


def test_use_project_root_leaves_mmr1kit_run_and_the_root_alone(project, monkeypatch):
    monkeypatch.setenv(HEADLESS_ENV, "1")  # `mmr1kit run` chose the directory (maybe with --cwd)
    assert use_project_root() == project / "notebooks"
    monkeypatch.delenv(HEADLESS_ENV)
    monkeypatch.chdir(project)
    assert use_project_root() == project


def test_headless_kernels_get_text_progress_and_no_loading_bars(monkeypatch):
    from mmr1kit.notebook import _headless_kernel

    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    with _headless_kernel():
        assert os.environ[HEADLESS_ENV] == "1" and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert HEADLESS_ENV not in os.environ and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"  # restored
