from pathlib import Path

import pytest

from amray.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_then_yaml_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("trainer:\n  lr: 3.0e-6\ngrpo:\n  samples_per_prompt: 8\n")
    cfg = load_config(f, ["trainer.lr=1e-6", "rollout.stop=['</answer>']", "rollout.seed=null"])
    assert cfg.trainer.lr == 1e-6  # "1e-6" is a string to YAML; still accepted as a float
    assert cfg.grpo.samples_per_prompt == 8
    assert cfg.grpo.prompts_per_step == 256  # paper default untouched
    assert cfg.rollout.stop == ["</answer>"] and cfg.rollout.seed is None


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"trainer\.lrr"):
        load_config(None, ["trainer.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key nosuch"):
        load_config(None, ["nosuch.x=1"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"grpo\.steps: expected an integer"):
        load_config(None, ["grpo.steps=ten"])
    with pytest.raises(ConfigError, match=r"trainer\.gradient_checkpointing"):
        load_config(None, ["trainer.gradient_checkpointing=maybe"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["trainer.lr"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    load_config(path)


def test_benchmark_settings_lists_and_dates(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("eval:\n  benchmarks: [gsm8k, math500]\nbench:\n  livecodebench:\n    date_from: 2024-10-01\n")
    cfg = load_config(f, ["bench.gsm8k.max_tokens=1024"])
    assert cfg.eval.benchmarks == ["gsm8k", "math500"]
    assert cfg.bench.livecodebench.date_from == "2024-10-01"  # YAML's date, kept as its text
    assert cfg.bench.gsm8k.max_tokens == 1024 and cfg.bench.math500.max_tokens is None
    assert load_config(None, ["eval.benchmarks=gsm8k, aime2024"]).eval.benchmarks == ["gsm8k", "aime2024"]
    with pytest.raises(ConfigError, match=r"bench\.livecodebench\.date_to: '2024-02-30' is not a date"):
        load_config(None, ["bench.livecodebench.date_to=2024-02-30"])
    f.write_text("bench:\n  livecodebench:\n    date_from: 2024-13-01\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"unknown config key bench\.gsm9k"):
        load_config(None, ["bench.gsm9k.max_tokens=1"])
