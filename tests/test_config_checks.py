"""mmr1kit.config_checks: every field's type and range, checked in MMR1Config.__post_init__, one line per bad field."""

from pathlib import Path

import pytest
import yaml

from mmr1kit.config import MMR1Config
from mmr1kit.config_checks import parse_argv, project_path


def error_lines(**values) -> list[str]:
    with pytest.raises(ValueError) as info:
        MMR1Config.from_dict(values)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    "values, line",
    [
        ({"learning_rate": -1e-4}, "MMR1Config.learning_rate=-0.0001: must be > 0"),
        ({"max_steps": "fifty"}, "MMR1Config.max_steps='fifty': expected an integer"),
        ({"max_steps": 2.5}, "MMR1Config.max_steps=2.5: expected an integer"),
        ({"max_steps": 0}, "MMR1Config.max_steps=0: must be >= 1 (or -1: num_train_epochs decides)"),
        ({"use_kl": "maybe"}, "MMR1Config.use_kl='maybe': expected true or false"),
        ({"per_device_train_batch_size": 0}, "MMR1Config.per_device_train_batch_size=0: must be >= 1"),
        ({"top_p": 0.0}, "MMR1Config.top_p=0.0: a probability mass: must be in (0, 1]"),
        ({"min_p": 1.5}, "MMR1Config.min_p=1.5: a probability: must be in [0, 1]"),
        ({"lora_dropout": 1.0}, "MMR1Config.lora_dropout=1.0: a probability: must be in [0, 1)"),
        ({"learning_rate": float("nan")}, "MMR1Config.learning_rate=nan: expected a number, not NaN"),
        ({"dataset": 3}, "MMR1Config.dataset=3: expected a string"),
        ({"reward_funcs": ["accuracy"], "reward_weights": [1.0, 0.5, 0.1]},
         "MMR1Config.reward_weights=[1.0, 0.5, 0.1]: 3 weight(s) for 1 reward function(s) ['accuracy']; give one "
         "weight per function (or none: all 1.0)"),
        ({"allow_changes": ["max_step"]},
         "MMR1Config.allow_changes=['max_step']: unknown field(s) 'max_step' (did you mean max_steps or max_tries?)"),
    ],
)
def test_a_bad_value_is_one_line_naming_field_value_and_what_is_accepted(values, line):
    assert error_lines(**values) == [line]


def test_every_bad_field_at_once():
    lines = error_lines(learning_rate=-1.0, max_steps="fifty", seed=-3)
    assert lines == ["MMR1Config.max_steps='fifty': expected an integer", "MMR1Config.learning_rate=-1.0: must be > 0",
                     "MMR1Config.seed=-3: must be >= 0"]


def test_strings_that_are_numbers_are_read_as_numbers(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("learning_rate: 1e-4\nmax_steps: 1e2\nuse_kl: 'no'\ntrain_sample_size: null\n")
    assert yaml.safe_load(preset.read_text())["learning_rate"] == "1e-4"  # YAML 1.1 reads 1e-4 as a string
    config = MMR1Config.from_yaml(preset)
    assert (config.learning_rate, config.max_steps, config.use_kl, config.train_sample_size) == (1e-4, 100, False, None)
    assert MMR1Config(report_to="none").report_to == []  # a string field keeps "none" (TRL reads it as no tracker)


def test_command_line_values_negative_numbers_lists_and_flags():
    known = MMR1Config.field_names()
    argv = ["--learning_rate", "-1e-4", "--reward_funcs", "accuracy", "format", "--reward_weights", "1", "-0.5",
            "--use_kl", "--no_entropy_reg", "--max_steps=7"]
    assert parse_argv(argv, known) == {"learning_rate": "-1e-4", "reward_funcs": ["accuracy", "format"],
                                       "reward_weights": ["1", "-0.5"], "use_kl": "true", "entropy_reg": "false",
                                       "max_steps": "7"}
    config = MMR1Config.from_args(["--reward_funcs", "accuracy", "format", "--reward_weights", "1", "-0.5",
                                   "--max_steps=7"])
    assert (config.reward_weights, config.max_steps) == ([1, -0.5], 7)
    with pytest.raises(ValueError) as info:
        MMR1Config.from_args(["--learning_rate", "-1e-4"])  # reaches the range check, with the preset's wording
    assert str(info.value) == "MMR1Config.learning_rate=-0.0001: must be > 0"
    with pytest.raises(ValueError, match=r"unknown command-line argument\(s\) \['x', '--lerning_rate'\]: "
                                         r"'lerning_rate' \(did you mean learning_rate"):
        MMR1Config.from_args(["x", "--lerning_rate", "1"])


def test_a_misspelled_preset_key_gets_a_suggestion(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("lerning_rate: 0.001\n")
    with pytest.raises(ValueError, match=r"in preset .*p.yaml: 'lerning_rate' \(did you mean learning_rate"):
        MMR1Config.from_args([str(preset)])


def test_the_default_data_card_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = MMR1Config()
    assert Path(config.dataset).is_absolute() and Path(config.dataset).is_file()
    assert project_path("no/such/file.json") == "no/such/file.json"  # anything else is left as given
    (tmp_path / "data_cards").mkdir()
    (tmp_path / "data_cards" / "synthetic_counting.md").write_text("---\n---\n")
    assert MMR1Config().dataset == "data_cards/synthetic_counting.md"  # a file here wins
