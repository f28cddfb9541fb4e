"""The notebooks: hygiene (static, fast) for every `notebooks/*.ipynb`, then real papermill execution with smoke
parameters, asserting on the numbers each notebook records (never on cell text).

Execution: 01 with its own defaults (a CPU smoke run), 02 on a real tiny run, 03 on two runs of a real tiny sweep,
05 through `mmr1kit.compare.compare_report` on that sweep.
"""

import ast
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

from mmr1kit.config import MMR1Config
from mmr1kit.notebook import notebook_parameters, run_notebook

pytest_plugins = ["runs_fixture"]  # tiny_run, tiny_sweep: real tiny run folders

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = ROOT / "notebooks" / "README.md"
QUIET = {"log_output": False, "progress": False}
MAX_DEFINITION_LINES = 10


def test_the_workflow_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_train_grpo.ipynb", "02_inspect_rollouts.ipynb", "03_training_curves.ipynb",
            "05_compare_runs.ipynb"} <= names


# ---------------------------------------------------------------------------------------------- hygiene


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell(path):
    params = notebook_parameters(path)  # raises unless exactly one tagged cell, the first code cell
    assert params, f"{path.name}: the parameters cell declares nothing"
    nb = nbformat.read(path, as_version=4)
    source = next(c for c in nb.cells if c.cell_type == "code").source
    for node in ast.parse(source).body:  # only `name[: type] = literal` lines: no imports, calls or expressions
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{path.name}: line {node.lineno} is not an assignment"
        ast.literal_eval(node.value)  # raises on anything computed
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    fields = MMR1Config.field_names()
    undocumented = [name for name, info in params.items()
                    if name not in fields and not info["help"].strip() and f"`{name}`" not in markdown]
    assert not undocumented, f"{path.name}: parameters neither MMR1Config fields nor documented: {undocumented}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts (strip them)"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_the_readme(path):
    assert f"`{path.name}`" in README.read_text(), f"{path.name} is not in notebooks/README.md"


def test_readme_indexes_every_stage():
    text = README.read_text()
    for name in ("01_train_grpo", "02_inspect_rollouts", "03_training_curves", "04_evaluate", "05_compare_runs"):
        assert f"| [`{name}.ipynb`]" in text or f"| `{name}.ipynb`" in text, name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_long_definitions(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= MAX_DEFINITION_LINES, (
                    f"{path.name} cell {i}: {node.name} is {lines} lines; move it into mmr1kit with a test")


# ---------------------------------------------------------------------------------------------- execution


def read(path):
    return json.loads(Path(path).read_text())


@pytest.mark.slow
def test_01_train_grpo_smoke(tmp_path):
    notebook = ROOT / "notebooks" / "01_train_grpo.ipynb"
    result = run_notebook(notebook, run_dir=tmp_path / "run", **QUIET)
    summary = read(tmp_path / "run" / "summary.json")
    assert 0 <= summary["eval/accuracy_before"] <= 1
    assert 0 <= summary["eval/accuracy_after"] <= 1
    assert summary["wall_time_s"] > 0
    steps = int(notebook_parameters(notebook)["max_steps"]["default"])
    assert summary["grpo_steps"] == steps
    assert result.html.is_file() and result.html.stat().st_size > 10_000
    # headless: text progress lines (relayed to the terminal by papermill), not transformers' HTML table
    outputs = [o for cell in nbformat.read(result.notebook, as_version=4).cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"[grpo] step {steps}/{steps} (100%)" in text and "[warm start] step 20/20 (100%)" in text
    assert not any("<progress" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Loading weights" not in text  # loading bars are off: under papermill they froze at "0%"
    for name in ("rewards", "kl", "entropy", "rollouts_last_step", "accuracy_by_count"):
        png = tmp_path / "run" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_02_inspect_rollouts(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    result = run_notebook(ROOT / "notebooks" / "02_inspect_rollouts.ipynb", run_dir=run_dir,
                          parameters={"threshold": 0.51, "n_gallery": 2}, **QUIET)
    record = read(run_dir / "inspect_rollouts.json")

    rows = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    totals, ious = {}, {}
    for row in rows:
        totals.setdefault((row["step"], row["group"]), []).append(row["reward"])
        ious.setdefault((row["step"], row["group"]), []).append(row["rewards/iou"])
    means = {k: np.mean(v) for k, v in totals.items()}
    assert record["completions"] == len(rows)
    assert record["steps"] == sorted({r["step"] for r in rows})
    assert record["groups"] == {
        "all": len(totals),
        "failures": sum(max(v) <= 0.51 for v in ious.values()),  # the first reward function: iou
        "zero_variance": sum(max(v) - min(v) <= 1e-6 for v in totals.values()),
        "below": sum(m < 0.51 for m in means.values()),
    }
    worst = sorted(means, key=lambda k: (means[k], -k[0], k[1]))[:2]
    assert [tuple(k) for k in record["gallery"]["worst"]] == worst
    # The report carries the static gallery (no kernel needed): one view per group shown, each with its image.
    html = result.html.read_text()
    shown = sum(len(v) for v in record["gallery"].values())
    assert html.count('class="mmr1-group"') >= shown > 0
    assert html.count('class="mmr1-figure"') >= shown


@pytest.mark.slow
def test_03_training_curves(tiny_sweep, tmp_path):
    runs = [tiny_sweep / "kl_approximator=k1,seed=0", tiny_sweep / "kl_approximator=k3,seed=1"]
    result = run_notebook(ROOT / "notebooks" / "03_training_curves.ipynb", run_dir=tmp_path / "curves",
                          parameters={"runs": [str(p) for p in runs], "smooth_window": 2}, **QUIET)
    record = read(tmp_path / "curves" / "curves.json")
    assert [r["label"] for r in record["runs"].values()] == ["kl_approximator=k1, seed=0", "kl_approximator=k3, seed=1"]
    for run, info in zip(runs, record["runs"].values()):
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert info["steps"] == 3
        for key in ("reward", "kl/k1", "kl/k2", "kl/k3", "kl/exact", "entropy", "temperature"):
            assert info["last"][key] == pytest.approx(last[key]), key
    expected = {"rewards", "kl", "entropy", "temperature", "lengths", "clip_ratio", "optimizer", "timing"}
    expected |= {f"ledger_{run.name}" for run in runs}  # the prompt ledger's view, one per run
    assert set(record["figures"]) == {f"{name}.png" for name in expected}
    for name in record["figures"]:
        assert (tmp_path / "curves" / name).read_bytes()[:4] == b"\x89PNG"
    fates = read(tmp_path / "curves" / "ledger.json")
    for run, label in zip(runs, fates):  # every prompt of the run's prompts.jsonl has exactly one fate
        prompts = {json.loads(line)["prompt_id"] for line in (run / "prompts.jsonl").read_text().splitlines()}
        assert sum(fates[label].values()) == len(prompts) > 0
    html = result.html.read_text()
    assert html.count("data:image/png") >= len(expected) and html.count("pass_rate_at_step") == len(runs)


@pytest.mark.slow
def test_05_compare_runs_via_compare_report(tiny_sweep, tmp_path):
    from mmr1kit.compare import compare_report

    result = compare_report(tiny_sweep, run_dir=tmp_path / "comparison")
    out = tmp_path / "comparison"
    record = read(out / "comparison.json")
    assert (record["runs"], record["failed"], record["by"]) == (6, 2, ["kl_approximator"])
    assert record["headline"] == "final/reward" and "final/reward" in record["metrics"]
    groups = {g["key"]["kl_approximator"]: g for g in record["groups"]}
    assert list(groups) == ["k1", "k3", "k2"]
    for kind in ("k1", "k3"):
        finals = [json.loads((tiny_sweep / f"kl_approximator={kind},seed={s}" / "metrics.jsonl")
                             .read_text().splitlines()[-1])["reward"] for s in (0, 1)]
        stats = groups[kind]["final/reward"]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(finals))
        assert stats["std"] == pytest.approx(np.std(finals, ddof=1), abs=1e-12)
        assert groups[kind]["runs"] == {"total": 2, "failed": 0}
    assert groups["k2"]["runs"] == {"total": 2, "failed": 2} and groups["k2"]["final/reward"]["n"] == 0
    assert (out / "comparison.csv").is_file() and (out / "runs.csv").is_file()
    assert (out / "sweep_kl_approximator.png").is_file() and (out / "curves_rewards_kl_approximator.png").is_file()
    assert result.html == out / "05_compare_runs.html" and result.html.is_file()
