"""The notebooks: hygiene (static, fast) for every `notebooks/*.ipynb`, then real papermill execution with smoke
parameters, asserting on the numbers each notebook records (never on cell text), and on what each HTML report shows
a reader: every figure the notebook saved, embedded, and no library noise.

Execution: 01 with its own defaults (and `report_to tensorboard`) through `mmr1kit run` in a fresh copy of the project (a CPU smoke run, shared
with the browser test), then 02, 03 and 05 with their own defaults on it; 02 on a real tiny run, 03 on two runs of a
real tiny sweep, 05 through `mmr1kit.compare.compare_report` on that sweep, 06 on the tiny run's last capsule.
"""

import ast
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from helpers_cli import mmr1kit_run
from reports import NOISE, figures_in_report, report_text

from raw_records import raw_rows
from tracker_records import tensorboard_scalars

from mmr1kit.config import MMR1Config
from mmr1kit.notebook import notebook_parameters, run_notebook

pytest_plugins = ["runs_fixture"]  # tiny_run, tiny_sweep: real tiny run folders; smoke_project: notebook 01's defaults

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
README = ROOT / "notebooks" / "README.md"
QUIET = {"log_output": False, "progress": False}
MAX_DEFINITION_LINES = 10


def test_the_workflow_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_train_grpo.ipynb", "02_inspect_rollouts.ipynb", "03_training_curves.ipynb",
            "05_compare_runs.ipynb", "06_objective_lab.ipynb"} <= names


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
    for name in ("01_train_grpo", "02_inspect_rollouts", "03_training_curves", "04_evaluate", "05_compare_runs",
                 "06_objective_lab"):
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


def assert_clean_report(html):
    """The report of a successful run carries results, not library noise."""
    noise = sorted({m.group(0) for m in NOISE.finditer(report_text(html))})
    assert not noise, f"{html.name} carries library noise: {noise}"


@pytest.mark.slow
def test_01_train_grpo_smoke(smoke_project):
    notebook = ROOT / "notebooks" / "01_train_grpo.ipynb"
    run_dir = smoke_project.run_dir  # notebook 01's own default (runs/smoke), given nothing on the command line
    summary = read(run_dir / "summary.json")
    assert 0 <= summary["eval/accuracy_before"] <= 1
    assert 0 <= summary["eval/accuracy_after"] <= 1
    assert summary["wall_time_s"] > 0
    steps = int(notebook_parameters(notebook)["max_steps"]["default"])
    assert summary["grpo_steps"] == steps
    html = run_dir / "01_train_grpo.html"
    assert smoke_project.train.stdout.splitlines()[-1] == str(run_dir)
    # headless: text progress lines (relayed to the terminal by papermill), not transformers' HTML table
    outputs = [o for cell in nbformat.read(run_dir / notebook.name, as_version=4).cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"[grpo] step {steps}/{steps} (100%)" in text and "[warm start] step 20/20 (100%)" in text
    assert not any("<progress" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Loading weights" not in text  # loading bars are off: under papermill they froze at "0%"
    figures = {"rewards", "kl", "entropy", "rollouts_last_step", "accuracy_by_count"}
    assert {p.stem for p in run_dir.glob("*.png")} == figures
    # the report embeds every one of them (same pixels), in the order the notebook draws them
    shown = figures_in_report(html, run_dir)
    assert sorted(shown, key=shown.get) == [f"{name}.png" for name in
                                           ("accuracy_by_count", "rewards", "kl", "entropy", "rollouts_last_step")]
    assert_clean_report(html)


@pytest.mark.slow
def test_01_console_is_progress_and_results(smoke_project):
    lines = [line for line in smoke_project.train.stderr.splitlines() if line.strip()]
    noise = [line for line in lines if NOISE.search(line) or re.fullmatch(r"<[\w.]+( [^<>]*)?>", line.strip())
             or re.match(r"(Executing|Ending) Cell", line) or "Alternative text" in line]
    assert not noise, noise
    progress = [line for line in lines if line.startswith(("[warm start] step", "[grpo] step"))]
    assert len(progress) == 20 + 4
    run_dir = smoke_project.run_dir
    for name in ("accuracy_by_count", "rewards", "kl", "entropy", "rollouts_last_step"):
        assert f"figure: {run_dir / name}.png" in lines
    assert any(line.startswith("EvalResult(32 records") for line in lines)


@pytest.mark.slow
def test_notebooks_chain_with_their_defaults(smoke_project):
    """01, then 02, 03 and 05 with nothing given: each reads runs/smoke and writes into its own folder."""
    root, run_dir = smoke_project.root, smoke_project.run_dir
    written = {}
    for name, folder, record in (("02_inspect_rollouts", "inspect", "inspect_rollouts.json"),
                                 ("03_training_curves", "curves", "curves.json"),
                                 ("05_compare_runs", "compare", "comparison.json")):
        run = mmr1kit_run(root, f"notebooks/{name}.ipynb")
        assert run.returncode == 0, run.stderr[-3000:]
        out = root / "runs" / folder
        assert run.stdout.splitlines()[-1] == str(out)
        written[name] = read(out / record)
        figures_in_report(out / f"{name}.html", out)
        assert_clean_report(out / f"{name}.html")
    assert (root / written["02_inspect_rollouts"]["run"]).resolve() == run_dir
    [curves] = written["03_training_curves"]["runs"].values()
    assert (root / curves["path"]).resolve() == run_dir and curves["steps"] == 4
    figures = written["03_training_curves"]["figures"]
    assert len(figures) == 10 and f"ledger_{run_dir.name}.png" in figures  # 9 curve figures and the run's ledger
    assert written["05_compare_runs"]["runs"] == 1
    assert not (run_dir / "inspect_rollouts.json").exists()  # the run inspected is only read


@pytest.mark.slow
def test_02_inspect_rollouts(tiny_run, tmp_path):
    run_dir = tmp_path / "inspect"
    result = run_notebook(ROOT / "notebooks" / "02_inspect_rollouts.ipynb", run_dir=run_dir,
                          parameters={"run": str(tiny_run), "threshold": 0.51, "n_gallery": 2}, **QUIET)
    record = read(run_dir / "inspect_rollouts.json")
    assert record["run"] == str(tiny_run)

    rows = [json.loads(line) for line in (tiny_run / "rollouts.jsonl").read_text().splitlines()]
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
    assert_clean_report(result.html)


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
    expected = {"rewards", "kl", "entropy", "temperature", "lengths", "clip_ratio", "optimizer", "timing", "memory"}
    expected |= {f"ledger_{run.name}" for run in runs}  # the prompt ledger's view, one per run
    assert set(record["figures"]) == {f"{name}.png" for name in expected}
    for name in record["figures"]:
        assert (tmp_path / "curves" / name).read_bytes()[:4] == b"\x89PNG"
    assert set(figures_in_report(result.html, tmp_path / "curves")) == set(record["figures"])
    assert_clean_report(result.html)
    fates = read(tmp_path / "curves" / "ledger.json")
    for run, label in zip(runs, fates):  # every prompt of the run's prompts.jsonl has exactly one fate
        prompts = {json.loads(line)["prompt_id"] for line in (run / "prompts.jsonl").read_text().splitlines()}
        assert sum(fates[label].values()) == len(prompts) > 0
    assert result.html.read_text().count("pass_rate_at_step") == len(runs)


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
    assert len(figures_in_report(result.html, out)) == len(list(out.glob("*.png"))) >= 4
    assert_clean_report(result.html)


@pytest.mark.slow
def test_06_objective_lab(tiny_run, tmp_path):
    grid = {"kl_approximator": ["k1", "k3", "exact"], "loss_type": ["grpo", "dapo"]}
    result = run_notebook(ROOT / "notebooks" / "06_objective_lab.ipynb", run_dir=tmp_path / "lab",
                          parameters={"run": str(tiny_run), "grid": grid}, **QUIET)
    record = read(tmp_path / "lab" / "objective_lab.json")
    metrics = {r["step"]: r for r in map(json.loads, (tiny_run / "metrics.jsonl").read_text().splitlines())}
    assert record["step"] == 3  # the latest capsule (capsule_every=2 over 3 steps: steps 2 and 3)
    labels = [v["label"] for v in record["variants"]]
    assert labels == [f"kl_approximator={k}, loss_type={t}" for k in grid["kl_approximator"] for t in grid["loss_type"]]
    own = [v for v in record["variants"] if v["is_run"]]
    assert [v["label"] for v in own] == ["kl_approximator=k3, loss_type=grpo"]
    assert own[0]["loss"] == pytest.approx(metrics[3]["loss"], rel=1e-6)  # replay reproduces the logged step
    assert own[0]["grad_norm"] == pytest.approx(metrics[3]["grad_norm"], rel=1e-6)
    for row in record["estimators"]:  # the estimators at the capsule's weights: what the run logged at step 3
        assert row["mean"] == pytest.approx(metrics[3][f"kl/{row['estimator']}"], rel=1e-5, abs=1e-8)
    cosine = np.array(record["cosine"]["data"])
    assert record["cosine"]["index"] == labels and np.allclose(np.diag(cosine), 1.0)
    capsule = tiny_run / "capsules" / "step-3"
    assert record["capsule_bytes"] == {name: (capsule / name).stat().st_size for name in record["capsule_bytes"]}
    for name in record["figures"]:
        assert (tmp_path / "lab" / name).read_bytes()[:4] == b"\x89PNG"
    assert set(figures_in_report(result.html, tmp_path / "lab")) == set(record["figures"])  # all in the report
    assert_clean_report(result.html)
    replay = read(tmp_path / "lab" / "replay.json")
    assert [v["label"] for v in replay["variants"]] == labels
