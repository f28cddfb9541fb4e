r"""Task metrics of `mmr1kit.evaluate`: per-example scores and aggregates for counting, math, grounding, OCR, detection.

`score_example(task, completion, row)` scores one completion against its dataset row and returns the record fields
of that task; `task_metrics(task, records)` aggregates the records of the first sample of every example.

| task      | per example (`score`, `correct`)                  | aggregates                                                |
|-----------|---------------------------------------------------|-----------------------------------------------------------|
| counting  | exact count (`pred_count`, `abs_error`)           | `accuracy`, `mean_abs_error`, `parse_rate`                |
| math      | answer equal (numbers, text, math_verify)         | `accuracy`                                                |
| grounding | IoU; correct if IoU >= 0.5                        | `acc@0.5` (= `accuracy`), `acc@0.75`, `mean_iou`, `center_acc`, `parse_rate` |
| ocr       | ANLS; correct if an exact (case-insensitive) match | `anls`, `ned_similarity` (1 − NED), `accuracy`           |
| detection | F1 at IoU 0.5; correct if F1 = 1                   | `map` (COCO mAP@[.5:.95]), `ap@0.5`, `ap@0.75`, micro `precision@0.5` / `recall@0.5` / `f1@0.5`, `mean_f1`, `accuracy` |

Boxes are compared in pixels: the solution's `box_convention` (row column, default `"pixel"`) and the prediction's
(Qwen2-VL `<|box_start|>` boxes are 0..1000) are both converted with the row's image size.

**Detection AP.** Computed by pycocotools' `COCOeval` itself (boxes converted to COCO `[x, y, w, h]`, labels matched
after whitespace collapsing and case folding). A generative model gives no confidence, so every predicted box gets
score 1.0 (as other VLM detection evaluations do). With equal scores COCOeval's stable sort ranks boxes by example
order, then by their order in the completion, so AP depends slightly on dataset order; precision, recall and F1 do
not. Predictions may carry their own scores (`pred_scores`), which COCOeval then uses. Ground-truth `area` is the
box area (COCO uses the mask area for its small/medium/large split). A predicted label that no ground truth has is
ignored by AP (COCO evaluates per ground-truth category) but counts as a false positive in precision / F1.

**OCR.** `anls` is DocVQA's ANLS (threshold 0.5, case-insensitive) over the reference answers; `ned_similarity` is
`1 − Levenshtein / max(len)`, case-sensitive, after whitespace collapsing (MMR1's OCR reward), best over references.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd

from mmr1kit.rewards.counting import answers_match
from mmr1kit.rewards.detection import MAX_PRED_BOXES, match_detections, normalize_label, parse_solution_boxes
from mmr1kit.rewards.grounding import box_iou, parse_solution_box
from mmr1kit.rewards.ocr import anls_score, ocr_score, reference_answers
from mmr1kit.rewards.parsing import (
    extract_answer,
    normalize_whitespace,
    parse_box,
    parse_boxes,
    parse_number,
    to_pixels,
)

TASKS = ("counting", "math", "grounding", "ocr", "detection")


def _size(row: dict) -> tuple[float, float] | None:
    for w, h in (("image_width", "image_height"), ("width", "height")):
        if row.get(w) and row.get(h):
            return float(row[w]), float(row[h])
    return None


def _pixels(box, convention: str, size) -> list[float] | None:
    try:
        return [float(v) for v in to_pixels(box, convention, *(size or (None, None)))]
    except (TypeError, ValueError):
        return None


def score_example(task: str, completion: str, row: dict) -> dict:
    """Score one completion (plain text) against its dataset `row`; return the task's record fields.

    Every task returns `answer` (the extracted answer text), `answered` (whether the parser found an answer: a
    number for counting, a box for grounding, boxes or an explicit `[]` for detection, any text otherwise), `score`
    (float) and `correct` (bool); see the module docstring for the task-specific fields.
    """
    answer = extract_answer(completion)
    solution = row["solution"]
    if task == "counting":
        pred, gold = parse_number(answer), parse_number(extract_answer(str(solution)))
        correct = pred is not None and gold is not None and pred == gold
        error = abs(pred - gold) if pred is not None and gold is not None else None
        return {"answer": answer, "answered": pred is not None, "pred_count": pred, "abs_error": error,
                "score": float(correct), "correct": correct}
    if task == "math":
        correct = answers_match(answer, extract_answer(str(solution)))
        return {"answer": answer, "answered": bool(answer), "score": float(correct), "correct": correct}
    if task == "ocr":
        refs = reference_answers(solution)
        anls = anls_score(answer, refs)
        ned = max(ocr_score(answer, r) for r in refs)
        exact = any(normalize_whitespace(answer).casefold() == normalize_whitespace(r).casefold() for r in refs)
        return {"answer": answer, "answered": bool(answer.strip()), "anls": anls, "ned_similarity": ned,
                "score": anls, "correct": exact}
    convention = row.get("box_convention") or "pixel"
    size = _size(row)
    if task == "grounding":
        gt = _pixels(parse_solution_box(solution), convention, size)
        found = parse_box(answer, convention)
        pred = _pixels(found.box, found.convention, size) if found else None
        iou = box_iou(pred, gt) if pred and gt else 0.0
        center = bool(pred and gt and gt[0] <= (pred[0] + pred[2]) / 2 <= gt[2] and gt[1] <= (pred[1] + pred[3]) / 2
                      <= gt[3])
        return {"answer": answer, "answered": pred is not None, "iou": iou, "center_hit": center,
                "parsed": pred is not None, "gt_box": gt, "pred_box": pred, "score": iou, "correct": iou >= 0.5}
    if task == "detection":
        gt = [(_pixels(b, convention, size), label) for b, label in parse_solution_boxes(solution)]
        found = parse_boxes(answer, convention, limit=MAX_PRED_BOXES + 1)[:MAX_PRED_BOXES]
        pred = [(_pixels(b.box, b.convention, size), b.label) for b in found]
        gt, pred = [g for g in gt if g[0]], [p for p in pred if p[0]]
        matched = len(match_detections(pred, gt, 0.5))
        f1 = 1.0 if not pred and not gt else 2 * matched / (len(pred) + len(gt))
        return {"answer": answer, "answered": bool(found) or "[]" in answer.replace(" ", ""),
                "gt_boxes": [b for b, _ in gt], "gt_labels": [lab or "" for _, lab in gt],
                "pred_boxes": [b for b, _ in pred], "pred_labels": [lab or "" for _, lab in pred],
                "n_gt": len(gt), "n_pred": len(pred), "n_matched": matched, "score": f1, "correct": f1 == 1.0}
    raise ValueError(f"task={task!r} is not one of {TASKS}")


def task_metrics(task: str, records: pd.DataFrame) -> dict:
    """Aggregate metrics of `task` over `records` (one row per example, as built by `score_example`)."""
    n = len(records)
    out = {"n": int(n), "accuracy": _mean(records["correct"].astype(float)) if n else None}
    if task == "counting":
        out["mean_abs_error"] = _mean(records["abs_error"].dropna())
        out["parse_rate"] = _mean(records["pred_count"].notna().astype(float))
    elif task == "grounding":
        iou = records["iou"].astype(float)
        out.update({"acc@0.5": _mean(iou >= 0.5), "acc@0.75": _mean(iou >= 0.75), "mean_iou": _mean(iou),
                    "center_acc": _mean(records["center_hit"].astype(float)),
                    "parse_rate": _mean(records["parsed"].astype(float))})
    elif task == "ocr":
        out.update({"anls": _mean(records["anls"]), "ned_similarity": _mean(records["ned_similarity"])})
    elif task == "detection":
        out.update(detection_metrics(records))
    return out


def _mean(values) -> float | None:
    values = pd.Series(values, dtype=float)
    return float(values.mean()) if len(values) else None


# --------------------------------------------------------------------------------------------------------------
# Detection: COCO AP through pycocotools
# --------------------------------------------------------------------------------------------------------------


def detection_metrics(records: pd.DataFrame) -> dict:
    """COCO AP (pycocotools) and micro precision / recall / F1 at IoU 0.5 of detection `records`.

    `records` has one row per image with `gt_boxes`, `gt_labels`, `pred_boxes`, `pred_labels` (pixel
    `[x1, y1, x2, y2]`) and optionally `pred_scores` (default 1.0 per box).
    """
    gt, pred = _detections(records)
    coco = coco_detection_metrics(gt, pred)
    matched = sum(len(match_detections([(b, lab) for b, lab, _ in p], g, 0.5)) for g, p in zip(gt, pred))
    n_pred, n_gt = sum(len(p) for p in pred), sum(len(g) for g in gt)
    return {
        "map": coco["map"],
        "ap@0.5": coco["ap@0.5"],
        "ap@0.75": coco["ap@0.75"],
        "precision@0.5": matched / n_pred if n_pred else None,
        "recall@0.5": matched / n_gt if n_gt else None,
        "f1@0.5": 2 * matched / (n_pred + n_gt) if n_pred + n_gt else None,
        "mean_f1": _mean(records["score"]),
    }


def _detections(records: pd.DataFrame):
    gt, pred = [], []
    for _, r in records.iterrows():
        gt.append(list(zip(r["gt_boxes"], r["gt_labels"])))
        scores = r.get("pred_scores")
        scores = [1.0] * len(r["pred_boxes"]) if not isinstance(scores, (list, tuple, np.ndarray)) else scores
        pred.append(list(zip(r["pred_boxes"], r["pred_labels"], scores)))
    return gt, pred


def _coco_eval(gt, pred):
    """Run COCOeval (bbox) on per-image lists; return the evaluated `COCOeval` and the label → category id map."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({normalize_label(lab) for image in gt for _, lab in image} |
                    {normalize_label(lab) for image in pred for _, lab, _ in image})
    ids = {lab: k + 1 for k, lab in enumerate(labels)}
    anns, dets = [], []
    for i, image in enumerate(gt):
        for box, lab in image:
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": ids[normalize_label(lab)],
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    for i, image in enumerate(pred):
        for box, lab, score in image:
            if box[2] >= box[0] and box[3] >= box[1]:  # an inverted box is no detection
                dets.append({"image_id": i + 1, "category_id": ids[normalize_label(lab)],
                             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": i + 1} for i in range(len(gt))], "annotations": anns,
                           "categories": [{"id": k, "name": lab} for lab, k in ids.items()]}
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": [],
                               "categories": coco_gt.dataset["categories"]}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator, ids


def coco_detection_metrics(gt: list[list], pred: list[list]) -> dict:
    """COCO box AP of predictions against ground truth, computed by pycocotools' `COCOeval`.

    Args:
        gt (`list[list[tuple]]`): Per image, `(box, label)` pairs; boxes `[x1, y1, x2, y2]` in pixels.
        pred (`list[list[tuple]]`): Per image (same order), `(box, label, score)` triples.

    Returns:
        `dict` with `map` (AP@[.50:.05:.95], `COCOeval.stats[0]`), `ap@0.5` (`stats[1]`), `ap@0.75` (`stats[2]`) and
        `ar@100` (`stats[8]`); `None` where COCO leaves the figure undefined (no ground-truth box at all).
    """
    if not any(gt):
        return {"map": None, "ap@0.5": None, "ap@0.75": None, "ar@100": None}
    evaluator, _ = _coco_eval(gt, pred)
    stats = [None if s < 0 else float(s) for s in evaluator.stats]
    return {"map": stats[0], "ap@0.5": stats[1], "ap@0.75": stats[2], "ar@100": stats[8]}


def detection_ap_by_label(records: pd.DataFrame) -> pd.DataFrame:
    """Per-label detection table: `label`, `n_gt`, `n_pred`, `ap` (AP@[.5:.95]) and `ap@0.5`, from COCOeval.

    Labels are whitespace-collapsed and case-folded; a label without ground truth has `ap` NaN.
    """
    gt, pred = _detections(records)
    columns = ["label", "n_gt", "n_pred", "ap", "ap@0.5"]
    if not any(gt) and not any(pred):
        return pd.DataFrame(columns=columns)
    evaluator, ids = _coco_eval(gt, pred)
    precision = evaluator.eval["precision"]  # (iou thresholds, recall points, categories, area ranges, max dets)
    cat_index = {k: j for j, k in enumerate(evaluator.params.catIds)}
    rows = []
    for lab, k in ids.items():
        p = precision[:, :, cat_index[k], 0, -1]
        rows.append({
            "label": lab,
            "n_gt": sum(normalize_label(g) == lab for image in gt for _, g in image),
            "n_pred": sum(normalize_label(q) == lab for image in pred for _, q, _ in image),
            "ap": float(p[p > -1].mean()) if (p > -1).any() else math.nan,
            "ap@0.5": float(p[0][p[0] > -1].mean()) if (p[0] > -1).any() else math.nan,
        })
    return pd.DataFrame(rows, columns=columns).sort_values(["n_gt", "label"], ascending=[False, True],
                                                           ignore_index=True)
