"""Tests for `mmr1kit.parameters`: reading a notebook's declared parameters, checking and coercing values, presets."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mmr1kit.parameters import check_parameters, notebook_parameters, parameter_type, resolve_parameters

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
SUMMARY_NB = FIXTURES / "write_summary.ipynb"
FAILING_NB = FIXTURES / "fails_third_cell.ipynb"


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
