"""The quick variant of every benchmark runs and writes a complete result, so the scripts cannot rot.

Nothing here asserts on a time or a memory figure (those depend on the machine and its load); the tests check that
each result records the machine, the versions, the load, the exact configuration and every repetition, and that
the README table is rebuilt from the results.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` is a folder of the repo, not installed
from benchmarks import (
    bench_data,
    bench_encode,
    bench_learning,
    bench_memory,
    bench_overhead,
    bench_plan,
    bench_signal,
    profile_step,
    run_all,
)


def check_common(report, name):
    assert report["benchmark"] == name and report["quick"] is True
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["versions"]["trl"] and report["versions"]["transformers"] and report["versions"]["torch"]
    load = report["load"]
    assert len(load["before"]) == 3 and len(load["after"]) == 3 and load["max_1min"] >= 0
    assert isinstance(load["quiet"], bool) and load["threshold"] >= 1.5
    assert report["config"]


def check_summary(s, n):
    assert s["n"] == n and s["min"] <= s["median"] <= s["max"]


@pytest.mark.slow
def test_overhead_compares_every_variant_with_trl_on_identical_settings(tmp_path):
    out = tmp_path / "overhead.json"
    report = bench_overhead.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["results"].keys() == report["results"].keys()
    check_common(report, "overhead")
    assert report["trl_config_differences"] == {}  # TRL's config equals MMR1Config's resolved TRL fields
    results, config = report["results"], report["config"]
    assert config["interleave"] == "step" and list(results) == list(bench_overhead.VARIANTS)
    for variant, r in results.items():
        assert len(r["runs"]) == config["warmup"] + config["rounds"]  # one single-step train() per round
        assert [run["round"] for run in r["runs"]] == list(range(config["warmup"] + config["rounds"]))
        for run in r["runs"]:
            assert len(run["step_time_s"]) == len(run["wall_step_s"]) == len(run["cpu_step_s"]) == 1
        for key in ("step_time_s", "wall_step_s", "cpu_step_s"):
            check_summary(r[key], config["rounds"])
        if variant != "trl":
            for key in ("ratio", "cpu_ratio", "wall_ratio"):
                check_summary(r[key], config["rounds"])
                assert len(r[f"{key}_per_pair"]) == config["rounds"]
            assert r["target"] == bench_overhead.TARGETS.get(variant)
            assert all(len(run["timing/policy"]) == 1 for run in r["runs"])
    assert results["neutral_record_on"]["runs"][-1]["timing/record"][0] > 0  # the record was written
    assert results["neutral_record_off"]["runs"][-1]["timing/record"] == [0.0]


@pytest.mark.slow
def test_encode_compares_each_group_size_with_trl_in_interleaved_rounds(tmp_path):
    report = bench_encode.main(["--quick", "--out", str(tmp_path / "encode.json")])
    check_common(report, "encode")
    config, results = report["config"], report["results"]
    n = config["settings"]["per_device_train_batch_size"]
    assert config["groups"] == [4, 8] and n == 16
    for g in config["groups"]:
        r = results[str(g)]
        assert r["prompts_per_step"] == n // g and len(r["rounds"]) == config["warmup"] + config["rounds"]
        for key in ("cpu_ratio", "ratio", "wall_ratio", "trl_cpu_step_s", "once_cpu_step_s"):
            check_summary(r[key], config["rounds"])
        v = r["vision"]  # MMR1Trainer's last step: each distinct image once per pass (prefill, reference, loss)
        assert v["encoded"] == 3 * n // g and v["encoded_by_trl"] == 3 * n and v["fallback_images"] == 0
    assert isinstance(results["meets_target"], bool)
    rows = [row for row in run_all.table_rows(tmp_path) if row[0].startswith("encode:")]  # the README table's rows
    assert [("G=4" in r[0], "G=8" in r[0]) for r in rows] == [(True, False), (False, True)]
    assert "images encoded 6 vs TRL's 48, preprocessed 2 vs 32" in rows[1][2] and rows[1][3] in ("✅ met", "❌ missed")


@pytest.mark.slow
def test_overhead_run_mode_uses_fresh_trainers(tmp_path):
    report = bench_overhead.main(["--quick", "--interleave", "run", "--variants", "neutral_record_off",
                                  "--out", str(tmp_path / "overhead.json")])
    runs = report["results"]["neutral_record_off"]["runs"]
    assert len(runs) == report["config"]["repeats"] and len(runs[0]["step_time_s"]) == report["config"]["steps"]
    check_summary(report["results"]["neutral_record_off"]["cpu_ratio"], report["config"]["repeats"])


@pytest.mark.slow
def test_memory_measures_each_group_in_a_fresh_process(tmp_path):
    report = bench_memory.main(["--quick", "--out", str(tmp_path / "memory.json")])
    check_common(report, "memory")
    groups = report["config"]["groups"]
    assert groups == [2, 4] and report["targets"]["peak_ratio_vs_first"] == 1.10
    for g in groups:
        r = report["results"][str(g)]
        assert len(r["runs"]) == report["config"]["repeats"]
        run = r["runs"][0]
        assert run["group"] == g and run["optimizer_steps"] == g // 2  # steps_per_generation = G / per_device
        assert run["peak_rss_bytes"] >= run["train_peak_rss_bytes"] >= run["rss_before_train_bytes"] > 0
        settings = report["config"]["settings_per_group"][str(g)]
        assert settings["per_device_train_batch_size"] == 2 and settings["steps_per_generation"] == g // 2
        assert isinstance(r["meets_target"], bool)
    assert report["results"]["2"]["peak_ratio_vs_first"] == 1.0


@pytest.mark.slow
def test_learning_records_accuracy_against_time_per_seed_in_parallel(tmp_path):
    report = bench_learning.main(["--quick", "--seeds", "0", "1", "--set", "eval_size=8",
                                  "--out", str(tmp_path / "learning.json")])
    check_common(report, "learning")
    assert report["config"]["workers"] == 2 and report["config"]["overrides"] == {"eval_size": 8}
    assert report["load"]["threshold"] == 2.5  # its own two processes load the machine by 2
    seeds = report["results"]["seeds"]
    assert [s["seed"] for s in seeds] == report["config"]["seeds"] == [0, 1]  # two processes, results in seed order
    for s in seeds:
        phases = [p["phase"] for p in s["points"]]
        assert phases[0] == "warmstart" and phases[-1] == "grpo"
        grpo = [p for p in s["points"] if p["phase"] == "grpo"]
        assert [p["step"] for p in grpo] == [0, 2, 4]
        for clock in ("wall_s", "cpu_s"):
            times = [p[clock] for p in s["points"]]
            assert times == sorted(times)  # training time only moves forward; evaluations are excluded
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in s["points"])
        assert s["eval_n"] == 8 and s["warmstart_cpu_s"] > 0 and s["grpo_cpu_s"] > 0
        by_count = s["accuracy_by_count_after_grpo"]
        assert by_count and all(k.isdigit() and 0.0 <= v <= 1.0 for k, v in by_count.items())
        assert s["gain"] == pytest.approx(s["accuracy_after_grpo"] - s["accuracy_after_warmstart"])
    assert report["results"]["time_axis"] == bench_learning.time_axis(2, 1)
    check_summary(report["results"]["gain"], 2)
    assert (tmp_path / "learning.png").stat().st_size > 0


@pytest.mark.slow
def test_data_path_is_compared_with_the_trainer_step(tmp_path):
    report = bench_data.main(["--quick", "--out", str(tmp_path / "data.json")])
    check_common(report, "data")
    r = report["results"]
    assert r["rows"] == 64 and len(r["passes"]) == report["config"]["repeats"]
    for stage in ("load", "decode", "preprocess", "trainer_path"):
        check_summary(r["seconds_per_row"][stage], report["config"]["repeats"])
        assert r["rows_per_second"][stage] > 0
    assert r["trainer"]["step_time_per_row_s"] > 0 and r["data_fraction_of_step"] > 0
    assert isinstance(r["bottleneck"], bool)


@pytest.mark.slow
def test_profile_step_attributes_the_step_to_phases(tmp_path):
    report = profile_step.main(["--quick", "--out", str(tmp_path / "profile.json")])
    check_common(report, "profile")
    assert set(report["results"]["phases"]) == set(profile_step.PHASES)
    assert report["results"]["cprofile_top"] and report["results"]["step_time_s"]["n"] == 2


def test_readme_table_is_rebuilt_between_the_markers(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    load = {"before": [0.5, 0.5, 0.5], "after": [0.7, 0.6, 0.5], "max_1min": 0.7, "quiet": True}
    ratio = {"n": 3, "median": 1.02, "min": 1.0, "max": 1.04}
    overhead = {"created": 0, "load": load, "results": {
        "trl": {"step_time_s": {"n": 24, "median": 0.8, "min": 0.7, "max": 0.9}},
        "neutral_record_off": {"ratio": ratio, "target": 1.05, "meets_target": True},
    }}
    (results / "overhead.json").write_text(json.dumps(overhead))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro\n\n{run_all.BEGIN}\nold table\n{run_all.END}\n\nafter\n")
    table = run_all.refresh_readme(readme, results)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Benchmarks\n\nintro") and text.endswith("after\n")
    assert "1.020 [1.000, 1.040] (n=3)" in table and "✅ met" in table and "≤ 1.05" in table
    assert table in text


def test_the_whole_run_is_timed_and_compared_with_its_budget(tmp_path):
    names = list(run_all.BENCHMARKS)
    run_all.write_run_record(tmp_path, False, names[:-1], [])  # a subset is not `make bench`: nothing written
    assert not (tmp_path / "run_all.json").exists()
    outcomes = [{"name": n, "returncode": 0, "seconds": 120.0} for n in names]
    run_all.write_run_record(tmp_path, False, names, outcomes)
    [row] = [r for r in run_all.render_table(tmp_path).splitlines() if "make bench" in r]
    total = 2 * len(names)
    assert f"| {total:.1f} (data 2.0, " in row and ("✅ met" if total <= run_all.BUDGET_MIN else "❌ missed") in row
    outcomes[0]["seconds"] = 60 * run_all.BUDGET_MIN
    run_all.write_run_record(tmp_path, False, names, outcomes)
    assert "❌ missed" in next(r for r in run_all.render_table(tmp_path).splitlines() if "make bench" in r)


@pytest.mark.parametrize("own", [1, 3])
def test_load_threshold_counts_the_benchmarks_own_processes(own):
    from benchmarks import common

    report = common.LoadLog(own_processes=own).report()
    assert report["threshold"] == common.QUIET_LOAD + own - 1
    assert report["quiet"] == (report["max_1min"] < report["threshold"])


@pytest.mark.slow
def test_signal_records_each_variant_from_one_warm_start(tmp_path):
    report = bench_signal.main(["--quick", "--variants", "none", "filter", "--set", "eval_size=8",
                                "--out", str(tmp_path / "signal.json")])
    check_common(report, "signal")
    (seed,) = report["results"]["seeds"]
    assert list(seed["variants"]) == ["none", "filter"] and seed["warmstart_cpu_s"] > 0
    for name, run in seed["variants"].items():
        assert [p["step"] for p in run["points"]] == [0, 2, 4]
        tokens = [p["tokens"] for p in run["points"]]
        assert tokens[0] == 0 and tokens == sorted(tokens) and tokens[-1] == run["tokens"] > 0
        assert run["points"][0]["cpu_s"] >= seed["warmstart_cpu_s"]  # the time axis starts with the warm start
        assert run["signal"]["signal/tries"] == 1.0
    assert seed["variants"]["none"]["tokens"] <= 4 * 8 * 8  # 4 steps x 8 completions x at most 8 tokens
    summary = report["results"]["variants"]
    assert summary["none"]["seeds_reaching_target"] == 0 and report["results"]["target_met"] is False
    assert report["results"]["table"].count("\n| `") == 2 and (tmp_path / "signal.png").stat().st_size > 0


def test_learning_rejects_an_unknown_override():
    with pytest.raises(SystemExit, match="max_step is neither a parameter of configs/demo.yaml"):
        bench_learning.preset(False, bench_learning.parse_overrides(["max_step=3"]))
    with pytest.raises(SystemExit, match="--set expects KEY=VALUE"):
        bench_learning.parse_overrides(["max_steps"])
    assert bench_learning.preset(False, {"max_steps": 3, "entropy_reg": True})["max_steps"] == 3


@pytest.mark.slow
def test_plan_estimate_of_the_tiny_models_training_peak_is_within_20_percent(tmp_path):
    report = bench_plan.main(["--quick", "--out", str(tmp_path / "plan.quick.json")])
    check_common(report, "plan")
    cases = report["results"]["cases"]
    assert [(c["size"], c["gradient_checkpointing"]) for c in cases] == [("tiny", False), ("tiny", True)]
    for case in cases:
        measured = case["measured_bytes"]
        assert {"generate", "reference", "rollout", "loss", "optimizer"} <= set(measured)
        assert measured["peak"] == max(measured.values()) > case["baseline_bytes"] > 0
        assert abs(case["ratio"] - 1) <= bench_plan.TARGET, case  # tensor bytes: deterministic, not a timing
    assert cases[1]["measured_bytes"]["loss"] < cases[0]["measured_bytes"]["loss"]  # checkpointing saves memory
    assert "memory plan: training peak" in run_all.render_table(tmp_path, quick=True)


def test_the_calibration_in_docs_is_the_recorded_result():
    root = Path(__file__).resolve().parent.parent
    report = json.loads((root / "benchmarks" / "results" / "plan.json").read_text())
    assert not report["quick"] and report["results"]["all_within_target"]
    cases = report["results"]["cases"]
    assert {(c["size"], c["gradient_checkpointing"]) for c in cases} == {
        (size, gc) for size in ("tiny", "50M", "300M") for gc in (False, True)}
    assert all(abs(c["ratio"] - 1) <= 0.2 for c in cases)
    assert bench_plan.markdown_table(report) in (root / "docs" / "memory.md").read_text()
    assert (root / "benchmarks" / "results" / "plan.png").read_bytes()[:4] == b"\x89PNG"

