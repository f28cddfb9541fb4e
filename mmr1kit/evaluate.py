"""Evaluation: generate on a held-out split with the training prompts, score each example, aggregate per task.

Generation uses the dataset's own `prompt` column (built by `mmr1kit.data.load_dataset` from the same templates as
training), so evaluation and training see the same text. Greedy decoding by default; `num_samples > 1` samples
with `temperature` and reports pass@k. Completions are decoded with `skip_special_tokens=True`, as TRL decodes
training rollouts, so rewards and evaluation see the same text. The per-task scores and aggregates (counting
accuracy, grounding Acc@0.5 / mean IoU, OCR ANLS / 1 − NED, detection COCO AP through pycocotools, math accuracy)
are defined in `mmr1kit.evaluate_metrics`.

A run folder (`mmr1kit.runs`) is evaluated with `run_models` (its starting model, `checkpoints/checkpoint-*` and
`final/`) and `run_eval_settings` (the dataset, split, prompt templates and pixel bounds of its `config.json`).

`protocol=` runs a published benchmark protocol instead (`mmr1kit.protocols`: its prompt, answer extractor and
decoding), so the numbers can be compared with the paper's; `evaluate_prompts` evaluates models under several prompts
into one table. Every record says whether the extractor found an answer (`answered`, `outcome`: `correct`, `wrong`,
`no_answer`), and every accuracy-like metric gets a bootstrap 95% interval (`<metric>_low`, `<metric>_high`;
`mmr1kit.evaluate_stats`, which also compares two models on the same examples).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from mmr1kit.capabilities import check_dataset
from mmr1kit.evaluate_metrics import TASKS, detection_ap_by_label, task_metrics


@dataclass
class EvalResult:
    """`records`: one row per (example, sample); `metrics`: aggregate figures of the task; `per_class`: accuracy by
    true count (counting) or AP by label (detection), else `None`."""

    records: pd.DataFrame
    metrics: dict
    per_class: pd.DataFrame | None = field(default=None, repr=False)

    def __repr__(self):
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return f"EvalResult({len(self.records)} records: {shown})"


# task -> name of its headline aggregate (kept in `metrics` next to `accuracy`)
TASK_SCORES = {"counting": "accuracy", "math": "accuracy", "grounding": "mean_iou", "ocr": "anls", "detection": "map"}
PASSTHROUGH = (str, int, float, bool, type(None))  # dataset columns copied into the records
RESERVED = ("sample", "completion", "answer", "score", "correct", "label", "iou", "anls", "gt_box", "pred_box",
            "gt_boxes", "pred_boxes", "gt_labels", "pred_labels")  # a dataset column of that name becomes row_<name>


def _batches(n, size):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


@torch.no_grad()
def generate(model, processor, dataset, *, batch_size=64, max_new_tokens=16, do_sample=False, temperature=1.0,
             num_samples=1, seed=0, skip_special_tokens=True, top_p=None, top_k=None,
             prompts=None) -> list[list[str]]:
    """Completions for every row: a list (rows) of lists (`num_samples` strings).

    Rows are rendered with the processor's chat template after TRL's `prepare_multimodal_messages` puts the images in
    the first user turn (or in the prompt's placeholders), exactly as `GRPOTrainer` does; a video row gets its frames
    and their metadata as the training hook gives them (`mmr1kit.data.media.conversation`). Prompts are left-padded.
    `prompts` (one message list per row) replaces the rows' `prompt` column (a protocol's prompt).
    """
    from mmr1kit.data.media import conversation

    model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    # A processor takes tokenizer options in `processor_kwargs` (passed loose, transformers 5.23 warns on every call).
    padding = {"processor_kwargs": {"padding": True}} if tokenizer is not processor else {"padding": True}
    torch.manual_seed(seed)
    outputs = []
    for idx in _batches(len(dataset), batch_size):
        rows = [r if prompts is None else {**r, "prompt": prompts[i]} for i, r in zip(idx, dataset.select(idx))]
        conversations, metadata = zip(*[conversation(r) for r in rows])
        videos = {"video_metadata": [m for ms in metadata for m in ms], "do_sample_frames": False}
        kwargs = {**padding.get("processor_kwargs", {}), **(videos if videos["video_metadata"] else {})}
        inputs = processor.apply_chat_template(list(conversations), add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt",
                                               **({"processor_kwargs": kwargs} if tokenizer is not processor
                                                  else padding))
        inputs = inputs.to(model.device)
        generated = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=top_k if do_sample else None,
            num_return_sequences=num_samples,
        )
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                       skip_special_tokens=skip_special_tokens)
        outputs += [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(rows))]
    return outputs


def dataset_task(dataset) -> str:
    """The single task named by the dataset's `task` column; raise `ValueError` when it is missing or mixed."""
    tasks = {t for t in dataset["task"] if t} if "task" in dataset.column_names else set()
    if len(tasks) != 1:
        raise ValueError(f"task='auto' needs one task in the dataset's `task` column, found {sorted(tasks)}; "
                         f"pass task= one of {TASKS}")
    return tasks.pop()


def _load(model_or_path, processor, device, min_pixels, max_pixels):
    from mmr1kit.models import load_policy, load_processor, resolve_model

    if hasattr(model_or_path, "generate"):
        model = model_or_path
        source = getattr(model, "name_or_path", None)
    else:
        source = resolve_model(str(model_or_path))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        model = load_policy(source, dtype=dtype).to(device)
    if processor is None:
        processor = load_processor(source, min_pixels, max_pixels)
    return model, processor


def evaluate(model_or_path, dataset, task: str = "counting", *, processor=None, batch_size=64, max_new_tokens=16,
             num_samples=1, temperature=1.0, seed=0, label=None, device=None, min_pixels=None, max_pixels=None,
             skip_special_tokens=True, protocol=None) -> EvalResult:
    """Evaluate a model (or checkpoint path) on `dataset` for `task`.

    Args:
        model_or_path: A loaded model, or a checkpoint folder / hub id / `"tiny"` (loaded in bf16 on CUDA, else
            float32 on CPU).
        dataset: As returned by `mmr1kit.data.load_dataset` (columns `prompt`, `image`, `solution`, ...).
        task (`str`, defaults to `"counting"`): One of `TASKS`, or `"auto"` for the dataset's `task` column.
        processor (*optional*): Defaults to the checkpoint's processor (with `min_pixels` / `max_pixels` applied).
        num_samples (`int`): 1 = greedy; k > 1 = k samples at `temperature`, adds `pass@k`.
        label (`str`, *optional*): Stored in a `label` column (e.g. "warm start", "after GRPO").
        device (`str`, *optional*): Where a model loaded from a path goes (default: CUDA if available).
        protocol (*optional*): A `mmr1kit.protocols` name, `Protocol` or data card naming one. Its prompt replaces
            the dataset's (unless it keeps it), its extractor and matcher score, and its decoding wins over
            `temperature` / `skip_special_tokens` (and over `max_new_tokens` where it fixes a length). Default: the
            `training` protocol (the dataset's prompt, the task's lenient parser, greedy).

    Returns:
        `EvalResult`. `records` columns: `id`, `sample`, `solution`, `completion`, `answer`, `answered`, `outcome`
        (`correct` / `wrong` / `no_answer`), `score`, `correct`, the task's fields (see
        `mmr1kit.evaluate_metrics`), `image_path`, every scalar dataset column (e.g. `count`, `difficulty`),
        `protocol` and `label`. `metrics` (first sample of each example): `task`, `protocol`, `n`, `accuracy`, the
        task's aggregates, `no_answer_rate`, `<metric>_low` / `<metric>_high` (bootstrap 95% intervals) and
        `pass@k` when sampling. `per_class`: accuracy by `count` (counting) or AP by label (detection).
    """
    from mmr1kit.evaluate_stats import metric_intervals, outcomes
    from mmr1kit.protocols import get_protocol, render_prompt, score

    protocol = get_protocol(protocol)
    task = dataset_task(dataset) if task == "auto" else task
    if task not in TASKS:
        raise ValueError(f"evaluate: task={task!r} is not one of {sorted(TASKS)} or 'auto'")
    decoding = protocol.decoding
    max_new_tokens = decoding.max_new_tokens or max_new_tokens
    if protocol.name != "training":  # the default protocol leaves sampling to the arguments, as before protocols
        temperature, skip_special_tokens = decoding.temperature, decoding.skip_special_tokens
    model, processor = _load(model_or_path, processor, device, min_pixels, max_pixels)
    check_dataset(dataset, processor, model, mode="error", max_pixels=max_pixels, max_completion_length=max_new_tokens)
    prompts = None if protocol.keeps_prompt else [render_prompt(r, protocol) for r in _rows_without_media(dataset)]
    completions = generate(model, processor, dataset, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           do_sample=decoding.do_sample or num_samples > 1, temperature=temperature,
                           num_samples=num_samples, seed=seed, skip_special_tokens=skip_special_tokens,
                           top_p=decoding.top_p, top_k=decoding.top_k, prompts=prompts)
    records = []
    for i, row in enumerate(_rows_without_media(dataset)):
        extra = {k if k not in RESERVED else f"row_{k}": v for k, v in row.items()
                 if k not in ("prompt", "solution", "id") and isinstance(v, PASSTHROUGH)}
        extra.update({k: v for k, v in (("images", row.get("image_paths")), ("video", row.get("video"))) if v})
        for j, text in enumerate(completions[i]):
            record = {**extra, "id": row["id"], "sample": j, "solution": row["solution"], "completion": text}
            record.update(score(protocol, task, text, row))
            record["protocol"] = protocol.name
            if label is not None:
                record["label"] = label
            records.append(record)
    df = pd.DataFrame(records)
    df["outcome"] = outcomes(df)
    first = df[df["sample"] == 0].reset_index(drop=True)
    metrics = {"task": task, "protocol": protocol.name, **task_metrics(task, first),
               "no_answer_rate": float((first["outcome"] == "no_answer").mean())}
    first = first.assign(no_answer=first["outcome"] == "no_answer")
    metrics.update(metric_intervals(first, {**INTERVALS.get(task, {}), "accuracy": "correct",
                                            "no_answer_rate": "no_answer"}, seed=seed))
    if num_samples > 1:
        solved = df.groupby("id")["correct"].any().astype(float)
        metrics[f"pass@{num_samples}"] = float(solved.mean())
        metrics.update(metric_intervals(pd.DataFrame({"solved": solved}), {f"pass@{num_samples}": "solved"}, seed=seed))
    per_class = None
    if task == "detection":
        per_class = detection_ap_by_label(first)
    elif "count" in first:
        per_class = accuracy_by(df, "count")
    return EvalResult(records=df, metrics=metrics, per_class=per_class)


# task -> {metric: per-example column} of the means that get a bootstrap interval (detection AP is not a mean of
# per-example values: its interval would need COCOeval per resample, too slow here)
INTERVALS = {"counting": {"parse_rate": "answered"},
             "grounding": {"acc@0.5": "correct", "mean_iou": "iou", "center_acc": "center_hit"},
             "ocr": {"anls": "anls", "ned_similarity": "ned_similarity"}, "detection": {"mean_f1": "score"}}


def _rows_without_media(dataset):
    """The dataset's rows with the decoded image columns dropped (paths stay in `image_path` / `image_paths`)."""
    return dataset.remove_columns([c for c in ("image", "images") if c in dataset.column_names])


def accuracy_by(records: pd.DataFrame, column: str = "count") -> pd.DataFrame:
    """Accuracy, n and mean score per value of `column` (first sample of each example)."""
    first = records[records["sample"] == 0]
    return first.groupby(column).agg(accuracy=("correct", "mean"), n=("correct", "size"),
                                     score=("score", "mean")).reset_index()


# --------------------------------------------------------------------------------------------------------------
# Runs: which models, which settings
# --------------------------------------------------------------------------------------------------------------


def run_models(run_dir, include_base: bool = True) -> dict[str, str]:
    """The models of a run folder, in training order: `{"base": ..., "checkpoint-N": ..., "final": ...}`.

    `base` is the model training started from (the manifest's `model`, else the config's `model_name_or_path`);
    checkpoints are `checkpoints/checkpoint-*` sorted by step; `final` is `final/` when it holds a model.

    Raises:
        FileNotFoundError: `run_dir` has no `config.json` (not a run folder).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    models = {}
    config = json.loads((run_dir / "config.json").read_text())
    if include_base:
        manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
        models["base"] = str(manifest.get("model") or config.get("model_name_or_path"))
    candidates = [Path(config["output_dir"])] if config.get("output_dir") else []
    checkpoints = next((p for p in candidates + [run_dir / "checkpoints"] if p.is_dir()), run_dir / "checkpoints")
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1])):
        if (path / "config.json").exists():
            models[path.name] = str(path)
    if (run_dir / "final" / "config.json").exists():
        models["final"] = str(run_dir / "final")
    return models


RUN_SETTINGS = ("dataset", "eval_split", "system_prompt_template", "question_template", "answer_template",
                "min_pixels", "max_pixels", "max_completion_length", "seed")


def run_eval_settings(run_dir) -> dict:
    """The evaluation settings a run trained with, from its `config.json`: `RUN_SETTINGS` that it records."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    return {k: config[k] for k in RUN_SETTINGS if k in config}


@dataclass
class EvalPlan:
    """What `notebooks/04_evaluate.ipynb` evaluates: models (label → path), data, prompts and generation bounds.

    `templates` holds the three template names (registry keys or literal templates) and `prompts` their text;
    `overrides` lists the settings given explicitly that differ from what the run trained with.
    """

    models: dict
    dataset: str
    split: str
    templates: dict
    prompts: dict
    max_new_tokens: int
    min_pixels: int | None = None
    max_pixels: int | None = None
    run: str | None = None
    overrides: dict = field(default_factory=dict)


def is_run_folder(path) -> bool:
    """Whether `path` is an mmr1kit run folder (its `config.json` is an `MMR1Config`, not a model config)."""
    config = Path(path) / "config.json"
    return config.is_file() and "reward_funcs" in json.loads(config.read_text())


def plan_evaluation(source, *, dataset: str = "", split: str = "", system_prompt_template: str = "",
                    question_template: str = "", answer_template: str = "", max_new_tokens: int = 0,
                    include_base: bool = True, checkpoints: str = "all") -> EvalPlan:
    """Resolve an evaluation: a run folder gives its models and its training settings, a model path gives one model.

    Empty / zero arguments take the run's value (from `config.json`), else mmr1kit's defaults (the synthetic counting
    card, split `test`, template `default`, 16 new tokens). `checkpoints`: `"all"`, `"last"` (the last checkpoint and
    `final`) or `"final"`.
    """
    from mmr1kit.data import templates as registry

    if checkpoints not in ("all", "last", "final"):
        raise ValueError(f"checkpoints={checkpoints!r}: expected 'all', 'last' or 'final'")
    run = str(source) if is_run_folder(source) else None
    trained = run_eval_settings(run) if run else {}
    if run:
        models = run_models(run, include_base=include_base)
        trained_models = [k for k in models if k.startswith("checkpoint-")]
        keep = {"all": trained_models, "last": trained_models[-1:], "final": []}[checkpoints]
        models = {k: v for k, v in models.items() if k in ("base", "final") or k in keep}
    else:
        models = {Path(str(source)).name or str(source): str(source)}
    given = {"dataset": dataset, "eval_split": split, "system_prompt_template": system_prompt_template,
             "question_template": question_template, "answer_template": answer_template,
             "max_completion_length": max_new_tokens}
    defaults = {"dataset": "data_cards/synthetic_counting.md", "eval_split": "test", "system_prompt_template":
                "default", "question_template": "default", "answer_template": "default", "max_completion_length": 16}
    value = {k: given[k] or trained.get(k) or defaults[k] for k in given}
    overrides = {k: (given[k], trained[k]) for k in given if given[k] and k in trained and given[k] != trained[k]}
    names = {k: value[k] for k in ("system_prompt_template", "question_template", "answer_template")}
    return EvalPlan(
        models=models, dataset=str(value["dataset"]), split=str(value["eval_split"]), templates=names,
        prompts={k: registry.resolve(k, v) for k, v in names.items()}, max_new_tokens=int(value["max_completion_length"]),
        min_pixels=trained.get("min_pixels"), max_pixels=trained.get("max_pixels"), run=run, overrides=overrides)


def evaluate_models(models: dict, dataset, task: str = "auto", **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate several models on one dataset; return `(records, metrics table)`, one metrics row per model label.

    `models` maps a label to a model or path (e.g. `run_models(run_dir)`, whose checkpoints hold their processor);
    `kwargs` go to `evaluate`. Models are loaded one at a time.
    """
    records, table = [], []
    for label, model in models.items():
        result = evaluate(model, dataset, task, label=label, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the model just evaluated is garbage now; free its memory for the next one
        records.append(result.records)
        table.append({"label": label, **result.metrics})
    return pd.concat(records, ignore_index=True), pd.DataFrame(table).set_index("label")


def evaluate_prompts(models: dict, dataset, task: str = "auto", *, protocol=None,
                     prompts=("training", "direct", "reasoning"), **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every model under every prompt: one table, rows `(label, prompt)`.

    Each prompt replaces the protocol's prompt and keeps its extractor and decoding, so the table shows the effect of
    the prompt next to the effect of training (a base model may gain more from a direct-answer prompt than from
    GRPO). `prompts` are names of `mmr1kit.protocols.PROMPTS` or a dict `{name: (system_prompt, question_template)}`
    (`(None, None)`: the dataset's prompt). Each model is loaded once; `kwargs` go to `evaluate`.

    Returns:
        `(records, table)`: the records with a `prompt` column; the metrics table indexed by `(label, prompt)`.
    """
    from mmr1kit.protocols import PROMPTS, get_protocol

    base = get_protocol(protocol)
    if not isinstance(prompts, dict):
        unknown = [p for p in prompts if p not in PROMPTS]
        if unknown:
            raise ValueError(f"evaluate_prompts: unknown prompt(s) {unknown}; available: {', '.join(PROMPTS)}")
        prompts = {p: PROMPTS[p] for p in prompts}
    load = {k: kwargs.pop(k, None) for k in ("processor", "device", "min_pixels", "max_pixels")}
    records, table = [], []
    for label, source in models.items():
        model, processor = _load(source, load["processor"], load["device"], load["min_pixels"], load["max_pixels"])
        for name, (system, question) in prompts.items():
            result = evaluate(model, dataset, task, label=label, protocol=base.with_prompt(system, question),
                              processor=processor, max_pixels=load["max_pixels"], **kwargs)
            records.append(result.records.assign(prompt=name))
            table.append({"label": label, "prompt": name, **result.metrics})
    return pd.concat(records, ignore_index=True), pd.DataFrame(table).set_index(["label", "prompt"])


# --------------------------------------------------------------------------------------------------------------
# Failures, drawn
# --------------------------------------------------------------------------------------------------------------


def failure_gallery(records: pd.DataFrame, *, max_items: int = 8, ncols: int = 4):
    """A `mmr1kit.plots.rollout_gallery` of the first `max_items` wrong first-sample records, boxes drawn.

    Ground-truth boxes are green, predicted boxes red (every box for detection, labelled). Records need
    `image_path`, `completion`, `score`; `gt_box` / `pred_box` (grounding) or `gt_boxes` / `pred_boxes`
    (detection) are drawn when present.
    """
    from matplotlib.patches import Rectangle

    from mmr1kit.plots import rollout_gallery

    wrong = records[(records["sample"] == 0) & ~records["correct"].astype(bool)].head(max_items)
    frame = pd.DataFrame({"image": wrong["image_path"], "completion": wrong["completion"],
                          "score": wrong["score"], "solution": wrong["solution"]})
    for media in ("images", "video"):  # a multi-image / video row shows all its images / key frames
        if media in wrong:
            frame[media] = wrong[media].tolist()
    if "answer" in wrong:  # the parsed prediction, shown next to the ground truth
        frame["answer"] = wrong["answer"]
    if "label" in wrong:
        frame["prompt_id"] = wrong["id"].astype(str) + " · " + wrong["label"].astype(str)
    fig = rollout_gallery(frame.reset_index(drop=True), ncols=ncols, max_items=max_items, reward_cols=["score"],
                          draw_boxes=False)
    for ax, (_, row) in zip(fig.axes, wrong.iterrows()):
        for key, color in (("gt", "limegreen"), ("pred", "red")):
            boxes = row.get(f"{key}_boxes") if f"{key}_boxes" in row else [row.get(f"{key}_box")]
            labels = row.get(f"{key}_labels") if f"{key}_labels" in row else [None]
            for box, text in zip(boxes if isinstance(boxes, list) else [], labels if isinstance(labels, list) else []):
                if isinstance(box, list) and len(box) == 4:
                    ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                           edgecolor=color, lw=1.5))
                    if text:
                        ax.text(box[0], box[1], text, color=color, fontsize=6, va="bottom")
    return fig
