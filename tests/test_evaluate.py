"""Evaluation: task metrics against independent computations (pycocotools on hand-built COCO files, a hand-written
Levenshtein), the evaluation loop on the real tiny model, run folders, and `notebooks/04_evaluate.ipynb` under papermill.
"""

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from oracles import levenshtein

from mmr1kit.evaluate import (
    accuracy_by,
    evaluate,
    evaluate_models,
    failure_gallery,
    plan_evaluation,
    run_models,
)
from mmr1kit.evaluate_metrics import (
    coco_detection_metrics,
    detection_ap_by_label,
    score_example,
    task_metrics,
)

ROOT = Path(__file__).resolve().parent.parent


def records_of(task, pairs, rows=None):
    """Records as `evaluate` builds them, from (completion, solution) pairs and optional extra row fields."""
    rows = rows or [{} for _ in pairs]
    return pd.DataFrame([{"id": str(i), "sample": 0, **score_example(task, c, {"solution": s, **extra})}
                         for i, ((c, s), extra) in enumerate(zip(pairs, rows))])


# ---------------------------------------------------------------------------------------------- counting, math


def test_counting_scores_exact_counts_and_errors():
    df = records_of("counting", [("<answer>3</answer>", "3"), ("<answer> three </answer>", "3"),
                                 ("<answer>5</answer>", "<answer> 2 </answer>"), ("3 apples", "3")])
    assert df["correct"].tolist() == [True, True, False, False]
    metrics = task_metrics("counting", df)
    assert metrics["accuracy"] == 0.5 and metrics["parse_rate"] == 0.75
    assert metrics["mean_abs_error"] == pytest.approx(1.0)  # errors 0, 0, 3 over the parsed answers


def test_math_accepts_equal_values_in_other_forms():
    df = records_of("math", [("<answer>\\frac{1}{2}</answer>", "0.5"), ("<answer>-9</answer>", "-9"),
                             ("<answer>7</answer>", "8")])
    assert df["correct"].tolist() == [True, True, False]


# ---------------------------------------------------------------------------------------------- grounding


def test_grounding_iou_acc_and_center_in_pixels_across_conventions():
    rows = [{"box_convention": "pixel", "image_width": 100, "image_height": 50},
            {"box_convention": "qwen2vl_1000", "image_width": 100, "image_height": 50},
            {"box_convention": "pixel", "image_width": 100, "image_height": 50},
            {"box_convention": "pixel", "image_width": 100, "image_height": 50}]
    pairs = [("[0, 0, 10, 10]", "[0, 0, 10, 20]"),  # IoU 0.5
             ("(0,0),(100,200)", "[0, 0, 100, 400]"),  # 0..1000: pred 10x10 px, gt 10x20 px -> IoU 0.5
             ("[0, 0, 9, 9]", "[0, 0, 10, 10]"),  # IoU 0.81
             ("no box", "[0, 0, 10, 10]")]
    df = records_of("grounding", pairs, rows)
    assert df["iou"].tolist() == pytest.approx([0.5, 0.5, 0.81, 0.0])
    assert df.loc[1, "pred_box"] == pytest.approx([0, 0, 10, 10]) and df.loc[1, "gt_box"] == pytest.approx([0, 0, 10, 20])
    m = task_metrics("grounding", df)
    assert (m["acc@0.5"], m["accuracy"], m["acc@0.75"]) == (0.75, 0.75, 0.25)
    assert m["mean_iou"] == pytest.approx((0.5 + 0.5 + 0.81) / 4)
    assert m["center_acc"] == 0.75 and m["parse_rate"] == 0.75


# ---------------------------------------------------------------------------------------------- OCR


def test_ocr_anls_and_ned_agree_with_a_direct_edit_distance():
    rng = random.Random(0)
    alphabet = "abcAB c"
    cases = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9))),
              ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 3))])
             for _ in range(200)]
    for pred, refs in cases:
        got = score_example("ocr", f"<answer>{pred}</answer>", {"solution": json.dumps(refs)})
        norm = lambda s: " ".join(s.split())
        sims = [1 - levenshtein(norm(pred), norm(r)) / max(len(norm(pred)), len(norm(r)), 1) for r in refs]
        lower = [1 - levenshtein(norm(pred).lower(), norm(r).lower()) / max(len(norm(pred)), len(norm(r)), 1)
                 for r in refs]
        expected_anls = max(s if s > 0.5 else 0.0 for s in lower)  # NL < 0.5 <=> similarity > 0.5
        assert got["ned_similarity"] == pytest.approx(max(sims), abs=1e-12), (pred, refs)
        assert got["anls"] == pytest.approx(expected_anls, abs=1e-12), (pred, refs)


def test_ocr_exact_match_is_case_and_space_insensitive():
    df = records_of("ocr", [("<answer>STOP </answer>", '["stop", "halt"]'), ("<answer>stops</answer>", "stop")])
    assert df["correct"].tolist() == [True, False]
    assert task_metrics("ocr", df)["anls"] == pytest.approx((1.0 + 0.8) / 2)


# ---------------------------------------------------------------------------------------------- detection


def cocoeval_stats(images, gt, dets):
    """pycocotools on hand-written COCO dictionaries (xywh boxes, lower-case names): the reference."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({a["name"] for a in gt} | {d["name"] for d in dets})
    cats = {n: k + 1 for k, n in enumerate(names)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i} for i in images], "categories": [{"id": v, "name": k} for k, v in cats.items()],
                        "annotations": [{"id": k + 1, "image_id": a["image"], "category_id": cats[a["name"]],
                                         "bbox": a["xywh"], "area": a["xywh"][2] * a["xywh"][3], "iscrowd": 0}
                                        for k, a in enumerate(gt)]}
        coco.createIndex()
        res = coco.loadRes([{"image_id": d["image"], "category_id": cats[d["name"]], "bbox": d["xywh"],
                             "score": d["score"]} for d in dets])
        e = COCOeval(coco, res, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def random_detection_case(seed):
    """Per image: ground-truth boxes and noisy / missing / spurious predictions with random scores."""
    rng = random.Random(seed)
    images, gt, dets = list(range(1, 6)), [], []
    for image in images:
        for _ in range(rng.randint(0, 4)):
            x, y, w, h = rng.uniform(0, 80), rng.uniform(0, 80), rng.uniform(8, 40), rng.uniform(8, 40)
            name = rng.choice(["dog", "cat", "person"])
            gt.append({"image": image, "name": name, "xywh": [x, y, w, h]})
            if rng.random() < 0.8:  # detected, with jitter
                j = [v + rng.uniform(-4, 4) for v in (x, y)] + [w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
                dets.append({"image": image, "name": name, "xywh": j, "score": rng.random()})
        for _ in range(rng.randint(0, 2)):  # false positives
            dets.append({"image": image, "name": rng.choice(["dog", "cat", "person"]),
                         "xywh": [rng.uniform(0, 80), rng.uniform(0, 80), 10.0, 10.0], "score": rng.random()})
    return images, gt, dets


def as_mmr1(images, gt, dets):
    """The same case as mmr1kit sees it: x1y1x2y2 boxes, labels in another case, per-image lists."""
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    g = [[(xyxy(a["xywh"]), a["name"].upper()) for a in gt if a["image"] == i] for i in images]
    p = [[(xyxy(d["xywh"]), d["name"].title(), d["score"]) for d in dets if d["image"] == i] for i in images]
    return g, p


@pytest.mark.parametrize("seed", range(5))
def test_detection_ap_equals_pycocotools_on_scored_predictions(seed):
    images, gt, dets = random_detection_case(seed)
    stats = cocoeval_stats(images, gt, dets)
    ours = coco_detection_metrics(*as_mmr1(images, gt, dets))
    assert ours["map"] == pytest.approx(stats[0], abs=1e-6)
    assert ours["ap@0.5"] == pytest.approx(stats[1], abs=1e-6)
    assert ours["ap@0.75"] == pytest.approx(stats[2], abs=1e-6)


def test_detection_ap_by_hand():
    # Two dogs, one found exactly: precision 1 up to recall 0.5, so AP = 51 of COCO's 101 recall points.
    gt = [[([0, 0, 10, 10], "dog"), ([20, 20, 30, 30], "dog")]]
    m = coco_detection_metrics(gt, [[([0, 0, 10, 10], "dog", 1.0)]])
    assert m["ap@0.5"] == pytest.approx(51 / 101) and m["map"] == pytest.approx(51 / 101)
    assert coco_detection_metrics(gt, [[]])["map"] == 0.0  # nothing predicted
    assert coco_detection_metrics([[]], [[([0, 0, 1, 1], "dog", 1.0)]])["map"] is None  # undefined without GT


def test_generated_detections_score_one_and_match_pycocotools():
    # Completions as a model writes them; every box gets score 1.0, ties kept in example then completion order.
    solution = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "dog"}, {"bbox_2d": [20, 20, 40, 40], "label": "cat"}])
    completions = ['[{"bbox_2d": [0, 0, 10, 10], "label": "Dog"}, {"bbox_2d": [50, 50, 60, 60], "label": "cat"}]',
                   '```json\n[{"bbox_2d": [21, 21, 40, 40], "label": "cat"}]\n```',
                   "I see nothing."]
    df = records_of("detection", [(c, solution) for c in completions])
    assert df["n_pred"].tolist() == [2, 1, 0] and df["n_matched"].tolist() == [1, 1, 0]
    metrics = task_metrics("detection", df)
    gt = [{"image": i + 1, "name": n, "xywh": b} for i in range(3)
          for n, b in (("dog", [0, 0, 10, 10]), ("cat", [20, 20, 20, 20]))]
    dets = [{"image": 1, "name": "dog", "xywh": [0, 0, 10, 10], "score": 1.0},
            {"image": 1, "name": "cat", "xywh": [50, 50, 10, 10], "score": 1.0},
            {"image": 2, "name": "cat", "xywh": [21, 21, 19, 19], "score": 1.0}]
    stats = cocoeval_stats([1, 2, 3], gt, dets)
    assert metrics["map"] == pytest.approx(stats[0], abs=1e-6) and metrics["ap@0.5"] == pytest.approx(stats[1], abs=1e-6)
    assert metrics["precision@0.5"] == pytest.approx(2 / 3) and metrics["recall@0.5"] == pytest.approx(2 / 6)
    assert metrics["f1@0.5"] == pytest.approx(2 * 2 / (3 + 6))
    table = detection_ap_by_label(df).set_index("label")
    assert table.loc["dog", "n_gt"] == 3 and table.loc["dog", "n_pred"] == 1
    assert table.loc["dog", "ap@0.5"] == pytest.approx(34 / 101)  # one of three dogs, at precision 1


# ---------------------------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def grounding_test(tmp_path_factory):
    from mmr1kit.data import load_dataset
    from mmr1kit.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("grounding")
    write_dataset("grounding", root, n=6, seed=3, split="test")
    return load_dataset(root, "test", system_prompt_template="grounding")


def test_evaluate_tiny_model_records_metrics_and_pass_at_k(qwen_path, grounding_test):
    result = evaluate(qwen_path, grounding_test, "auto", max_new_tokens=6, batch_size=4, num_samples=2,
                      temperature=1.0, label="tiny")
    df = result.records
    assert len(df) == 12 and sorted(df["sample"].unique()) == [0, 1] and set(df["label"]) == {"tiny"}
    assert result.metrics["task"] == "grounding" and result.metrics["n"] == 6 and "pass@2" in result.metrics
    for name in ("pass@2", "accuracy", "mean_iou", "center_acc", "no_answer_rate"):  # every mean has an interval
        assert result.metrics[f"{name}_low"] <= result.metrics[name] <= result.metrics[f"{name}_high"], name
    first = df[df["sample"] == 0]
    assert result.metrics["mean_iou"] == pytest.approx(first["iou"].mean())
    assert {"image_path", "gt_box", "pred_box", "relation", "difficulty"} <= set(df.columns)
    # the generated text is what was scored
    again = [score_example("grounding", c, dict(r)) for c, (_, r) in zip(first["completion"], first.iterrows())]
    assert [a["iou"] for a in again] == first["iou"].tolist()
    table = accuracy_by(df, "relation")
    assert table["n"].sum() == 6 and set(table.columns) == {"relation", "accuracy", "n", "score"}


def test_failure_gallery_draws_ground_truth_and_predictions():
    df = records_of("grounding", [("[0, 0, 10, 10]", "[0, 0, 40, 40]"), ("[1, 1, 5, 5]", "[0, 0, 40, 40]")])
    df["image_path"], df["completion"], df["solution"] = "missing.png", "[0, 0, 10, 10]", "[0, 0, 40, 40]"
    fig = failure_gallery(df, max_items=2)
    assert [len(ax.patches) for ax in fig.axes[:2]] == [2, 2]  # one green, one red box per failure
    for ax, (_, row) in zip(fig.axes, df.iterrows()):  # the ground truth next to the prediction, in words too
        assert " ".join(ax.get_xlabel().splitlines()).startswith(f"truth [0, 0, 40, 40] · answer {row['answer']}")


# ---------------------------------------------------------------------------------------------- runs and the notebook


@pytest.fixture(scope="module")
def counting_run(qwen_path, counting_dir, tmp_path_factory):
    """A real 2-step run with checkpoints at steps 1 and 2 and a final model."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "counting"
    config = MMR1Config.from_dict({
        "run_dir": str(run_dir), "dataset": str(counting_dir), "model_name_or_path": str(qwen_path), "max_steps": 2,
        "learning_rate": 1e-2, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 8,
        "save_steps": 1, "save_total_limit": None, "question_template": "counting", "reward_funcs": ["accuracy"]})
    trainer = MMR1Trainer(model=str(qwen_path), args=config, train_dataset=load_dataset(counting_dir, "train", config))
    trainer.train()
    trainer.save_model(str(run_dir / "final"))
    return run_dir


def test_run_models_and_plan_use_the_runs_settings(counting_run, qwen_path):
    models = run_models(counting_run)
    assert list(models) == ["base", "checkpoint-1", "checkpoint-2", "final"]
    assert models["base"] == str(qwen_path)
    plan = plan_evaluation(counting_run, checkpoints="last")
    assert list(plan.models) == ["base", "checkpoint-2", "final"]
    assert plan.templates["question_template"] == "counting" and plan.split == "test" and plan.max_new_tokens == 8
    assert "{question} Output the final answer" in plan.prompts["question_template"] and not plan.overrides
    assert plan_evaluation(counting_run, question_template="r1v").overrides == {
        "question_template": ("r1v", "counting")}
    assert list(plan_evaluation("tiny").models) == ["tiny"]


def test_evaluate_models_on_checkpoints(counting_run, counting_dir):
    from mmr1kit.data import load_dataset

    data = load_dataset(counting_dir, "test", question_template="counting").select(range(4))
    records, table = evaluate_models(run_models(counting_run, include_base=False), data, max_new_tokens=4)
    assert list(table.index) == ["checkpoint-1", "checkpoint-2", "final"]
    assert (table["n"] == 4).all() and len(records) == 12
    for label, group in records.groupby("label"):
        assert table.loc[label, "accuracy"] == pytest.approx(group["correct"].mean())


@pytest.mark.slow
def test_04_evaluate_notebook_on_a_run(counting_run, counting_dir, tmp_path):
    from reports import NOISE, figures_in_report, report_text

    from mmr1kit.notebook import run_notebook

    result = run_notebook(ROOT / "notebooks" / "04_evaluate.ipynb", run_dir=tmp_path / "eval", log_output=False,
                          progress=False, parameters={"source": str(counting_run), "dataset": str(counting_dir),
                                                      "eval_size": 16, "max_new_tokens": 6, "gallery_size": 4})
    out = tmp_path / "eval"
    metrics = json.loads((out / "eval_metrics.json").read_text())
    records = pd.read_json(out / "eval_records.jsonl", lines=True)
    assert metrics["task"] == "counting" and metrics["n"] == 16 and metrics["split"] == "test"
    assert list(metrics["models"]) == ["base", "checkpoint-1", "checkpoint-2", "final"]
    assert metrics["templates"]["question_template"] == "counting"  # the run's template, read from config.json
    assert metrics["prompts"]["question_template"].endswith("Output the final answer (number) in <answer> </answer> tags.")
    for label, group in records.groupby("label"):
        assert len(group) == 16
        assert metrics["models"][label]["accuracy"] == pytest.approx(group["correct"].mean())
        assert metrics["models"][label]["n"] == 16
    by_count = [r for r in metrics["per_class"] if r["model"] == "final"]
    assert sum(r["n"] for r in by_count) == 16 and {r["count"] for r in by_count} <= set(range(5))
    assert (out / "failures.png").read_bytes()[:4] == b"\x89PNG" and result.html.is_file()
    assert np.isfinite(metrics["wall_time_s"])
    # protocol, outcomes with intervals, paired comparison with the base model, prompts side by side
    assert metrics["protocol"] == "training" and metrics["published"] == []  # a folder, not a card
    outcomes = pd.DataFrame(metrics["outcomes"]).set_index("label")
    assert list(outcomes.index) == list(metrics["models"])
    assert (outcomes[["correct", "wrong", "no_answer"]].sum(axis=1) == 16).all()
    assert (outcomes["accuracy_low"] <= outcomes["accuracy"]).all() and (outcomes["accuracy"] <= outcomes["accuracy_high"]).all()
    comparisons = pd.DataFrame(metrics["comparisons"])
    assert comparisons["b"].tolist() == ["checkpoint-1", "checkpoint-2", "final"] and set(comparisons["a"]) == {"base"}
    for _, c in comparisons.iterrows():
        assert c["difference"] == pytest.approx(outcomes.loc[c["b"], "accuracy"] - outcomes.loc["base", "accuracy"])
    variants = pd.DataFrame(metrics["prompt_variants"])
    assert len(variants) == 4 * 3 and (variants["n"] == 16).all()
    assert set(variants["prompt"]) == {"training", "direct", "reasoning"}
    training = variants[variants["prompt"] == "training"].set_index("label")["accuracy"]
    assert training.to_dict() == pytest.approx(outcomes["accuracy"].to_dict())  # same prompt, same greedy answers
    for figure in ("outcomes.png", "paired.png", "prompts.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    # the report shows every figure the notebook saved, and no library noise
    assert {"accuracy_by_count.png", "failures.png", "outcomes.png", "paired.png", "prompts.png"} <= set(
        figures_in_report(result.html, out))
    assert not NOISE.search(report_text(result.html))
