"""Data path throughput: loading MMR1 JSON with images and preprocessing it as the trainer does, per row.

Usage:
    python -m benchmarks.bench_data            # 2000-row counting set, 3 repetitions, about 1 min
    python -m benchmarks.bench_data --quick    # 64 rows (tests)

Stages, each timed over every row of a synthetic counting set in MMR1 JSON format (`write_dataset`, 112x112 PNGs;
written once, outside the timing), `--repeats` times:

- `load`: `mmr1kit.data.load_dataset` (parse the JSON, check every row and its image header, build the
  `datasets.Dataset` with the prompt template);
- `decode`: fetch the rows in the trainer's batches (`dataset[indices]`, what the dataloader does), which decodes
  every PNG to an RGB `PIL.Image`;
- `preprocess`: per batch, exactly the two processor calls of `GRPOTrainer._generate_and_score_completions`:
  `processor.apply_chat_template(..., tokenize=True, return_dict=True)` for generation and
  `processor(images=..., text=..., padding=True)` for the forward passes (images are preprocessed twice);
- `trainer_path` = decode + preprocess: the part of a step the data costs.

Batches are the trainer's: `--batch` rows (the demo's 64 completions per step). In training each prompt appears
G times in a batch and each copy is decoded and preprocessed again; distinct rows cost the same, so the rows here
are distinct (every row of the set is visited once).

The comparison: a short `MMR1Trainer` run with the demo's GRPO settings on the same data gives the trainer's step
time per row (completion), `step_time / 64`; `data_fraction_of_step = trainer_path per row / step time per row`
must stay well below 1 for the data never to be the bottleneck (the preprocessing is part of TRL's step; the decode
happens in the dataloader, between steps).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_data.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common

NAME = "data"


def parse_args(argv=None):
    parser = common.base_parser(__doc__, NAME)
    parser.add_argument("--rows", type=int, default=2000, help="rows of the synthetic counting set")
    parser.add_argument("--batch", type=int, default=64, help="rows per trainer batch (completions per step)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over every row")
    parser.add_argument("--trainer-steps", type=int, default=6, help="steps of the reference trainer run")
    parser.add_argument("--warmup", type=int, default=2, help="first trainer steps left out of its median")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.batch, args.repeats, args.trainer_steps, args.warmup = 64, 8, 2, 2, 1
    return args


def preprocess(processor, rows):
    """The trainer's two processor calls on a batch of rows (each with its decoded image)."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows]
    generation = processor.apply_chat_template(conversation=prompts, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)
    texts = [apply_chat_template({"prompt": p}, processor)["prompt"] for p in prompts]
    forward = processor(images=[[r["image"]] for r in rows], text=texts, padding=True, return_tensors="pt")
    return generation, forward


def time_pass(dataset, processor, batch):
    """One pass over every row in trainer batches: (decode seconds, preprocess seconds)."""
    decode = prep = 0.0
    for start in range(0, len(dataset), batch):
        t0 = time.perf_counter()
        chunk = dataset[start : start + batch]  # what the dataloader fetches: images decoded here
        rows = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
        t1 = time.perf_counter()
        preprocess(processor, rows)
        t2 = time.perf_counter()
        decode, prep = decode + t1 - t0, prep + t2 - t1
    return decode, prep


def trainer_step_time(data_path, model_path, settings, steps, warmup, seed):
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    with tempfile.TemporaryDirectory(prefix="bench-data-") as run_dir:
        config = MMR1Config.from_dict({**settings, "max_steps": steps, "seed": seed, "run_dir": run_dir,
                                       "model_name_or_path": str(model_path)})
        clock = common.StepClock()
        trainer = MMR1Trainer(args=config, train_dataset=load_dataset(data_path, "train", config), callbacks=[clock])
        common.silence(trainer).train()
    step_times = common.logged(trainer, "step_time")[warmup:]
    return {"step_time_s": step_times, "wall_step_s": clock.durations[warmup:],
            "completions_per_step": config.per_device_train_batch_size}


def main(argv=None):
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.models import load_processor

    args = parse_args(argv)
    common.setup_torch(args.threads)
    started = time.time()
    data_path = common.counting_data(args.rows)
    model_path = common.tiny_model(args.quick)
    settings = {**common.demo_grpo_settings(), "save_strategy": "no", "logging_steps": 1}
    if args.quick:
        settings.update(per_device_train_batch_size=args.batch, num_generations=4, max_completion_length=4)
    templates = MMR1Config.from_dict({**settings, "run_dir": tempfile.gettempdir()})  # the run's prompt templates
    processor = load_processor(model_path, templates.min_pixels, templates.max_pixels)
    load = common.LoadLog()
    passes = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        dataset = load_dataset(data_path, "train", templates)
        load_s = time.perf_counter() - t0
        decode_s, prep_s = time_pass(dataset, processor, args.batch)
        passes.append({"repeat": r, "load_s": load_s, "decode_s": decode_s, "preprocess_s": prep_s,
                       "load_1min": load.sample()})
        print(f"[data] rep {r}: load {load_s:.2f} s, decode {decode_s:.2f} s, preprocess {prep_s:.2f} s "
              f"for {len(dataset)} rows (load {passes[-1]['load_1min']})", flush=True)

    trainer = trainer_step_time(data_path, model_path, settings, args.trainer_steps, args.warmup, args.seed)
    n = len(dataset)
    per_row = {
        stage: common.summarize([p[key] / n for p in passes])
        for stage, key in (("load", "load_s"), ("decode", "decode_s"), ("preprocess", "preprocess_s"))
    }
    per_row["trainer_path"] = common.summarize([(p["decode_s"] + p["preprocess_s"]) / n for p in passes])
    rows_per_s = {stage: 1.0 / s["median"] for stage, s in per_row.items()}
    step_per_row = statistics.median(trainer["step_time_s"]) / trainer["completions_per_step"]
    results = {
        "rows": n,
        "seconds_per_row": per_row,
        "rows_per_second": rows_per_s,
        "passes": passes,
        "trainer": {**trainer, "step_time_per_row_s": step_per_row},
        "data_fraction_of_step": per_row["trainer_path"]["median"] / step_per_row,
        "load_fraction_of_step": per_row["load"]["median"] / step_per_row,
    }
    results["bottleneck"] = results["data_fraction_of_step"] >= 1.0
    print(f"[data] {rows_per_s['trainer_path']:.0f} rows/s through decode + preprocess, "
          f"{1 / step_per_row:.0f} rows/s through the trainer: the data path is "
          f"{100 * results['data_fraction_of_step']:.1f}% of a step", flush=True)
    config = {"data": str(data_path), "model": str(model_path), "trainer_settings": settings,
              **{k: getattr(args, k) for k in ("rows", "batch", "repeats", "trainer_steps", "warmup", "seed",
                                               "threads")}}
    return common.write_result(common.out_path(args, NAME), NAME, quick=args.quick, config=config, results=results,
                               load=load.report(), started=started,
                               targets={"data_fraction_of_step": "< 1 (never the bottleneck of a step)"})


if __name__ == "__main__":
    main()
