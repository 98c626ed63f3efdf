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


# Allowed values are checked at load, with the key named (the values the issue found accepted).
@pytest.mark.parametrize("override, message", [
    ("log.wandb_mode=offlin", r"log\.wandb_mode: 'offlin' is not one of offline, online, disabled \(did you mean offline\?\)"),
    ("trainer.backend=ncl", r"trainer\.backend: 'ncl' is not one of auto, gloo, nccl"),
    ("trainer.dtype=bf16", r"trainer\.dtype: 'bf16' is not one of float32, bfloat16, auto \(did you mean bfloat16\?\)"),
    ("sync.backend=object-store", r"sync\.backend: 'object-store' is not one of"),
    ("grpo.samples_per_prompt=-3", r"grpo\.samples_per_prompt: must be >= 1, got -3"),
    ("trainer.num_workers=0", r"trainer\.num_workers: must be >= 1, got 0"),
    ("eval.benchmarks=gsm8k,math501", r"eval\.benchmarks: 'math501' is not one of aime2024, .* \(did you mean math500\?\)"),
    ("rollout.top_p=0", r"rollout\.top_p: must be > 0 and <= 1, got 0\.0"),
    ("trainer.min_lr_ratio=1.5", r"trainer\.min_lr_ratio: must be >= 0 and <= 1, got 1\.5"),
    ("bench.gsm8k.max_tokens=0", r"bench\.gsm8k\.max_tokens: must be >= 1, got 0"),
    ("data.ledger_stage=true", r"data\.ledger_stage: True is not one of 1, 2"),
    ("rollout.max_tokens=1024", r"rollout\.max_tokens: 1024 leaves no room for a prompt within rollout\.max_model_len=1024"),
])
def test_allowed_values_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_config_built_or_changed_in_python_is_checked_the_same_way():
    from amray.config import Config, TrainerConfig, validate

    validate(Config(trainer=TrainerConfig(num_workers=4)))
    for change, message in [
        (lambda c: setattr(c.trainer, "num_workers", 0), r"trainer\.num_workers: must be >= 1"),
        (lambda c: setattr(c.trainer, "dtype", "bf16"), r"trainer\.dtype: 'bf16' is not one of"),
        (lambda c: setattr(c.eval, "benchmarks", "gsm8k"), r"eval\.benchmarks: 'gsm8k' is not a list"),
        (lambda c: setattr(c.grpo, "steps", "10"), r"grpo\.steps: expected an integer"),
        (lambda c: setattr(c.bench.livecodebench, "date_from", "2024-13-01"), r"bench\.livecodebench\.date_from"),
        (lambda c: setattr(c, "trainer", None), r"trainer: expected a TrainerConfig section"),
    ]:
        cfg = Config()
        change(cfg)
        with pytest.raises(ConfigError, match=message):
            validate(cfg)


def test_runs_start_by_validating_before_ray_starts():
    import ray

    from amray.config import Config
    from amray.rayenv import init_ray

    cfg = Config()
    cfg.grpo.samples_per_prompt = -3
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match=r"grpo\.samples_per_prompt"):
        init_ray(cfg)
    assert not ray.is_initialized()


def test_benchmark_names_are_the_registrys():
    import dataclasses
    import typing

    from amray.config import BenchConfig, BenchmarkName
    from amray.evaluation.benchmarks import REGISTRY

    assert set(typing.get_args(BenchmarkName)) == set(REGISTRY)  # what eval.benchmarks accepts is what GRPO can run
    assert set(REGISTRY) <= {f.name for f in dataclasses.fields(BenchConfig)}  # each has its `bench` settings


def test_printed_config_loads_back_to_the_same_tree(tmp_path):
    from amray.configtree import to_yaml

    cfg = load_config(CONFIGS[0], ["eval.benchmarks=gsm8k", "rollout.stop=['</a>']", "rollout.seed=null"])
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg
