"""Every job's command line as a user meets it: `--help` lists every config key with its default,
what it accepts and its docstring; `--print-config` prints the resolved tree and exits; a bad value
stops the job before Ray starts, naming the key; outputs go to an absolute directory that holds the
run's config.yaml; long work shows progress unless log.progress=false."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from amray.config import Config, load_config, parse_cli
from amray.configtree import _hints, field_docs

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.py"))


def load_job(path: Path):
    spec = importlib.util.spec_from_file_location(f"amray_job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(cls: type, prefix: str = "") -> list[tuple[str, type, str]]:
    """(key, owning dataclass, field name) of every leaf of the tree."""
    out = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += leaves(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, cls, f.name))
    return out


def squash(text: str) -> str:
    return " ".join(text.split())


def run_main(job: Path, argv: list[str]) -> int | None:
    """A job's main() as its command line runs it: the exit code, or None when it returned."""
    try:
        load_job(job).main(argv)
    except SystemExit as e:
        return e.code
    return None


def bare_run_config(job: Path) -> Config:
    """What the job runs with when given no flags: the demo reads its own config file, evaluate
    starts from evaluation sampling."""
    if job.stem == "demo":
        return load_config(ROOT / "configs" / "demo_cpu.yaml")
    if job.stem == "evaluate":
        from amray.evaluation.config import load_eval_config

        return load_eval_config(None, [])
    return Config()


def shown(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_help_lists_every_key_with_its_default_and_docstring(job: Path, capsys) -> None:
    assert run_main(job, ["--help"]) == 0
    text = capsys.readouterr().out
    flat, defaults = squash(text), bare_run_config(job)
    for key, cls, name in leaves(Config):
        value = functools.reduce(getattr, key.split("."), defaults)
        value = list(value) if isinstance(value, tuple) else value
        assert f"\n  {key} = {shown(value)}   (" in text, f"{job.name} --help lacks {key} = {shown(value)}"
        doc = field_docs(cls).get(name)
        if doc:
            assert squash(doc)[:60] in flat, f"{job.name} --help lacks the docstring of {key}"
    assert "   (int >= 1)\n      FSDP2 learner actors" in text  # what a key accepts, before its docstring
    assert "(one of float32, bfloat16, auto)" in text


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_print_config_prints_the_resolved_tree_and_exits(job: Path, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = run_main(job, ["--print-config", "--output-dir", "runs/x", "trainer.lr=3e-6", "eval.benchmarks=gsm8k"])
    assert code in (0, None)
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["trainer"]["lr"] == 3e-6 and tree["eval"]["benchmarks"] == ["gsm8k"]
    assert tree["log"]["output_dir"] == str(tmp_path / "runs" / "x")  # resolved: absolute
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(tree))
    load_config(tmp_path / "printed.yaml")  # what it prints is a config file


def test_scorer_prints_its_config_and_lists_every_key(capsys) -> None:
    from amray.rewards.__main__ import main

    assert main(["score", "--input", "in.jsonl", "--output", "/tmp/out.jsonl", "--print-config", "reward.timeout_s=5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["reward"]["timeout_s"] == 5.0
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "  reward.sandbox.cpu_s = 5   (int" in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [
    ("log.wandb_mode=offlin", "log.wandb_mode"), ("trainer.backend=ncl", "trainer.backend"),
    ("trainer.dtype=bf16", "trainer.dtype"), ("grpo.samples_per_prompt=-3", "grpo.samples_per_prompt"),
    ("trainer.num_workers=0", "trainer.num_workers"), ("eval.benchmarks=math501", "eval.benchmarks"),
])
def test_a_bad_value_stops_the_job_before_ray_starts(override: str, key: str, capsys) -> None:
    import ray

    assert run_main(ROOT / "jobs" / "grpo.py", ["data.train=train.jsonl", override]) == 2
    assert f"config key {key}:" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_outputs_are_absolute_and_a_relative_one_is_refused_inside_a_ray_job(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    cfg, _ = parse_cli(["--output-dir", "runs/x"], "job")
    assert cfg.log.output_dir == str(tmp_path / "runs" / "x")
    # what Ray's job supervisor sets for an entrypoint submitted with --working-dir
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}}))
    assert parse_cli(["--output-dir", str(tmp_path / "abs")], "job")[0].log.output_dir == str(tmp_path / "abs")
    with pytest.raises(SystemExit):
        parse_cli(["--output-dir", "runs/x"], "job")
    err = capsys.readouterr().err
    assert "--output-dir runs/x is a relative path" in err and "e.g. --output-dir /shared/runs/x" in err
    with pytest.raises(SystemExit):
        parse_cli([], "job")  # the default log.output_dir (runs/default) is relative too
    assert "log.output_dir runs/default is a relative path" in capsys.readouterr().err


def test_the_output_directory_gets_the_resolved_config_and_says_where(tmp_path, capsys) -> None:
    from amray.jobcli import prepare_output_dir

    cfg, _ = parse_cli(["--output-dir", str(tmp_path / "run"), "grpo.steps=3"], "job")
    out = prepare_output_dir(cfg, "metrics.jsonl")
    assert load_config(out / "config.yaml") == cfg
    assert f"outputs: {out} (on " in capsys.readouterr().out


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_every_job_writes_its_config_before_ray_starts(job: Path) -> None:
    """main() makes its output directory (config.yaml included) before it joins Ray."""
    main = next(n for n in ast.parse(job.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = {n.func.id: n.lineno for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "prepare_output_dir" in calls, f"{job.name}: main() never calls prepare_output_dir"
    assert calls["prepare_output_dir"] < calls.get("init_ray", 10**9), f"{job.name}: config.yaml only after Ray starts"


class Learners:
    """Stands in for a LearnerGroup: the SFT loop's progress is what is under test here."""

    def configure(self, *args) -> None:
        pass

    def train_step(self, batch, loss) -> dict[str, float]:
        return {"loss": 1.0, "lr": 1e-5}


@pytest.mark.parametrize("progress", [True, False])
def test_sft_shows_a_bar_unless_log_progress_is_false(progress: bool, capsys) -> None:
    from amray.batch import TrainBatch
    from amray.sft import sft_epochs

    cfg = load_config(None, [f"log.progress={str(progress).lower()}", "sft.batch_size=2", "sft.epochs=2"])
    data = TrainBatch([np.arange(5)] * 6, [np.ones(5, np.float32)] * 6)
    assert len(sft_epochs(cfg, Learners(), data)) == 6
    assert ("sft: 100%" in capsys.readouterr().err) == progress


@pytest.mark.parametrize("quiet", [False, True])
def test_preprocessing_says_each_stage_unless_told_not_to(quiet: bool, tmp_path, capsys) -> None:
    from amray.data.preprocess import main

    rows = [{"id": i, "source": "math", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
          "--report", str(tmp_path / "report.json"), *(["--no-progress"] if quiet else [])])
    err = capsys.readouterr().err
    assert ("clean: query_rules on 5 rows" in err) != quiet and ("query_rules: 100%" in err) != quiet
