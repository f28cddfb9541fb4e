"""`python -m mmr1kit.train` and the notebook's launcher: a preset plus overrides in, a run folder out."""

import io
import sys
import time

import pytest
import yaml
from raw_records import raw_steps, rollouts_per_step

from mmr1kit.launch import LaunchError, launch_command, launch_training, stream_process, write_launch_config
from mmr1kit.runs import load_run
from mmr1kit.train import checkpoint_step, main, resolve_resume


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10.0 for c in completions]


# --- resume_from_checkpoint ---------------------------------------------------------------------------------------


def test_resume_values(tmp_path):
    out = tmp_path / "checkpoints"
    for value in (None, False, "false", "", "none"):
        assert resolve_resume(value, out) is None
    with pytest.raises(ValueError, match=r"no checkpoint-\* folder in .*checkpoints; use 'auto'"):
        resolve_resume(True, out)
    assert resolve_resume("auto", out) is None  # a preemptible job's first start
    for step in (2, 10, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    assert resolve_resume(True, out).endswith("checkpoint-10")
    assert resolve_resume("true", out) == resolve_resume("auto", out) == resolve_resume("latest", out)
    assert resolve_resume(str(out / "checkpoint-4"), out) == str(out / "checkpoint-4")
    assert checkpoint_step(out / "checkpoint-4") == 4
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        resolve_resume(str(out / "checkpoint-7"), out)


def test_bad_input_fails_before_any_model_loads(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="unknown command-line argument"):
        main(["--no_such_field", "1"])
    with pytest.raises(ValueError, match="resume_from_checkpoint='True': no checkpoint"):
        main(["--run_dir", str(tmp_path / "fresh"), "--resume_from_checkpoint", "True"])
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "fresh").exists()


# --- one process, in this process -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_group_of_32_from_4_completions_per_device(qwen_path, counting_dir, tmp_path):
    preset = tmp_path / "g32.yaml"
    preset.write_text(yaml.safe_dump(dict(model_name_or_path=str(qwen_path), dataset=str(counting_dir),
                                          per_device_train_batch_size=4, num_generations=32, max_completion_length=4,
                                          beta=0.0, save_strategy="no")))
    run_dir = main([str(preset), "--run_dir", str(tmp_path / "run"), "--steps_per_generation", "8",
                    "--gradient_accumulation_steps", "8", "--max_steps", "1"],
                   reward_funcs=[length_reward])
    run = load_run(run_dir)
    assert run.config["generation_batch_size"] == 32 and run.config["num_generations"] == 32
    assert raw_steps(run_dir) == [1] and rollouts_per_step(run_dir) == {1: 32}
    rollouts = run.rollouts
    assert len(rollouts) == 32 and rollouts["prompt_id"].nunique() == 1 and set(rollouts["group"]) == {0}
    assert abs(rollouts["advantage"].sum()) < 1e-3 and rollouts["advantage"].abs().max() > 0
    assert (run_dir / "final" / "model.safetensors").exists()


# --- the notebook's launcher ----------------------------------------------------------------------------------------


def test_launch_config_is_validated_for_the_launch_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match=r"num_generations=8.*completions generated per step"):
        write_launch_config(dict(run_dir=str(tmp_path / "run"), per_device_train_batch_size=2, num_generations=8), 2)
    assert not (tmp_path / "run").exists()
    # a group that spans both processes is valid for 2 processes, though not for 1
    assert write_launch_config(dict(run_dir=str(tmp_path / "run"), per_device_train_batch_size=2, num_generations=4), 2)
    with pytest.raises(ValueError, match=r"num_generations=4"):
        write_launch_config(dict(run_dir=str(tmp_path / "run"), per_device_train_batch_size=2, num_generations=4), 1)
    path = write_launch_config(dict(run_dir=tmp_path / "run", max_steps=3), 1)
    assert yaml.safe_load(path.read_text()) == {"run_dir": str((tmp_path / "run").resolve()), "max_steps": 3}
    command = launch_command(path, 4, "configs/accelerate/zero3.yaml", main_process_port=29999)
    assert command[1:] == ["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero3.yaml",
                           "--num_processes", "4", "--main_process_port", "29999", "-m", "mmr1kit.train", str(path)]


def test_stream_process_relays_output_and_fails_with_its_tail():
    out = io.StringIO()
    tail = stream_process([sys.executable, "-c", "import sys; print('step 1'); print('\\r50%', end='')"], out=out)
    assert out.getvalue() == tail == "step 1\n\r50%"  # carriage returns kept: progress bars redraw in place
    with pytest.raises(LaunchError, match=r"exited with code 3; last output:\nboom"):
        stream_process([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], out=io.StringIO())
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="ran past its timeout of 1 s"):
        stream_process([sys.executable, "-c", "import time; time.sleep(60)"], out=io.StringIO(), timeout=1)
    assert time.perf_counter() - start < 15  # the process group was stopped, not waited for


@pytest.mark.slow
def test_launch_training_with_two_processes_writes_the_run_folder(qwen_path, counting_dir, tmp_path):
    out = io.StringIO()
    run_dir = launch_training(dict(model_name_or_path=str(qwen_path), dataset=str(counting_dir),
                                   run_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                                   num_generations=4, max_completion_length=6, save_strategy="no",
                                   reward_funcs=["format", "accuracy"]),
                              num_processes=2, out=out, timeout=240)
    assert run_dir == (tmp_path / "run").resolve()
    assert "2/2" in out.getvalue() and "run folder" in out.getvalue()  # the progress bar and the log reached `out`
    run = load_run(run_dir)
    assert (run_dir / "launch.yaml").exists() and run.config["max_steps"] == 2
    assert raw_steps(run_dir) == [1, 2]
    assert rollouts_per_step(run_dir) == {1: 8, 2: 8}  # 4 per process, each recorded once
    assert (run.rollouts.groupby(["step", "group"]).size() == 4).all()
    assert (run_dir / "final" / "model.safetensors").exists()
