"""Tests for `mmr1kit.notebook`: parameter checks (fast) and real papermill runs of the fixture notebooks (slow)."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mmr1kit.notebook import (
    NotebookRunError,
    _default_run_dir,
    check_parameters,
    find_executed_notebooks,
    notebook_parameters,
    parameter_type,
    render_html,
    resolve_parameters,
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


def make_notebook(path, cells):
    """Write a notebook whose cells are given as (source, tags) or markdown strings."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    for cell in cells:
        if isinstance(cell, str):
            nb.cells.append(new_markdown_cell(cell))
        else:
            source, tags = cell
            nb.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nbformat.write(nb, path)
    return path


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


# ---------------------------------------------------------------------------------------------------------------
# Inspecting parameters


def test_notebook_parameters_reads_names_types_defaults_and_help():
    params = notebook_parameters(SUMMARY_NB)
    assert list(params)[:4] == ["run_dir", "n", "lr", "use_bias"]
    assert params["lr"] == {"default": "0.001", "inferred_type_name": "float", "help": "a float"}
    assert parameter_type(params["widths"]) == "list"
    assert parameter_type(params["config_overrides"]) == "dict"


@pytest.mark.parametrize(
    "cells, message",
    [
        ([("x = 1", [])], "no cell tagged 'parameters'"),  # forgot the tag
        ([("x = 1", ["parameters"]), ("y = 2", ["parameters"])], "2 cells tagged 'parameters'"),  # two cells
        ([("import os", []), ("x = 1", ["parameters"])], "must be the first code cell"),  # not first
    ],
)
def test_notebook_parameters_rejects_bad_parameters_cells(tmp_path, cells, message):
    path = make_notebook(tmp_path / "bad.ipynb", ["# title", *cells])
    with pytest.raises(ValueError, match=message):
        notebook_parameters(path)


def test_notebook_parameters_falls_back_to_syntax_tree_for_unions(tmp_path):
    # papermill's line regex does not read `str | None` annotations; such a name must not be "unknown"
    # (nor a line with "=" in its value or its help comment), and names must keep the cell's order
    source = ('ckpt: str | None = None  # checkpoint path\nlabel: str = "a=b"  # has an equal sign\n'
              "steps: int = 2  # 0 = no training")
    path = make_notebook(tmp_path / "union.ipynb", [(source, ["parameters"])])
    params = notebook_parameters(path)
    assert list(params) == ["ckpt", "label", "steps"]
    assert params["ckpt"]["help"] == "checkpoint path" and params["steps"]["help"] == "0 = no training"
    assert parameter_type(params["ckpt"]) == "str or None"
    assert check_parameters(path, {"ckpt": "none", "label": "x", "steps": "3"}) == {
        "ckpt": "none", "label": "x", "steps": 3}  # a str parameter keeps the string "none"


# ---------------------------------------------------------------------------------------------------------------
# Checking and coercing values


def test_unknown_parameter_lists_valid_names():
    with pytest.raises(ValueError) as info:
        check_parameters(SUMMARY_NB, {"n": "2", "nn": "3"})
    message = str(info.value)
    assert "unknown parameter 'nn'" in message and "write_summary.ipynb" in message
    assert "valid: run_dir, n, lr, use_bias, name, widths, fail_on_n" in message


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("n", "5", 5),  # command-line string to int
        ("n", 7, 7),  # typed value kept
        ("n", 4.0, 4),  # integral float accepted for an int
        ("lr", "1e-5", 1e-5),  # PyYAML alone would leave "1e-5" a string
        ("lr", 2, 2.0),  # int accepted for a float
        ("use_bias", "yes", True),
        ("use_bias", "False", False),
        ("name", "123", "123"),  # str parameters take the text as is
        ("widths", "[3, 4]", [3, 4]),
        ("widths", (3, 4), [3, 4]),
        ("config_overrides", "{beta: 0.1}", {"beta": 0.1}),
    ],
)
def test_check_parameters_coerces_to_the_default_type(name, value, expected):
    out = check_parameters(SUMMARY_NB, {name: value})
    assert out == {name: expected} and type(out[name]) is type(expected)


@pytest.mark.parametrize(
    "name, value, expected_type",
    [
        ("n", "abc", "int"),
        ("n", "1.5", "int"),  # would lose the fraction
        ("n", True, "int"),  # a bool is not a count
        ("lr", "fast", "float"),
        ("use_bias", "maybe", "bool"),
        ("widths", "3", "list"),
        ("config_overrides", "[1]", "dict"),
        ("name", 3, "str"),
        ("n", None, "int"),  # the default is not None, so None is not accepted
    ],
)
def test_check_parameters_rejects_values_that_cannot_be_coerced(name, value, expected_type):
    with pytest.raises(ValueError) as info:
        check_parameters(SUMMARY_NB, {name: value})
    message = str(info.value)
    assert f"parameter {name!r}" in message and repr(value) in message and f"as {expected_type} " in message


def test_resolve_parameters_merges_preset_and_passes_extras_through(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("n: 4\nlr: 0.5\nbeta: 0.04\nconfig_overrides: {seed: 1}\nrun_dir: from-preset\n")
    out = resolve_parameters(SUMMARY_NB, {"lr": "0.1", "config_overrides": "{seed: 2, x: 1}"}, preset)
    assert out == {"n": 4, "lr": 0.1, "config_overrides": {"beta": 0.04, "seed": 2, "x": 1}, "run_dir": "from-preset"}


def test_preset_with_unknown_keys_needs_config_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("x: 2\nbeta: 0.04\n")
    with pytest.raises(ValueError, match=r"sets 'beta', which is not a parameter .* \(valid: run_dir, x\).*config_overrides"):
        resolve_parameters(FAILING_NB, None, preset)
    preset.write_text("- just a list\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        resolve_parameters(FAILING_NB, None, preset)
    with pytest.raises(ValueError, match="preset 'nope' not found"):
        resolve_parameters(FAILING_NB, None, "nope", search_root=tmp_path)


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
