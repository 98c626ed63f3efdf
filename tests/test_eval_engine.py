"""Every benchmark through one real vLLM engine (tiny random Qwen2) and the real reward pool: the
job's outputs, re-scoring them through the saved-responses path, and the GRPO driver's hook."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import ray

from amray.cluster import init_ray
from amray.config import RolloutConfig, load_config
from amray.evaluation.benchmarks import REGISTRY
from amray.evaluation.harness import evaluate_benchmarks, load_problems, prepare_tasks
from amray.evaluation.config import load_eval_config
from amray.models import build_tiny_model
from amray.rewards.pool import RewardPool
from amray.engine import EnginePool

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_evaldata
CONTEXT = 4096  # LiveCodeBench prompts run to ~1.5k tokens with the tiny byte-level tokenizer

sys.path.insert(0, str(ROOT))
from jobs.evaluate import main  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp("eval") / "tiny")
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT  # rope: a longer context is just a setting
    (model_dir / "config.json").write_text(json.dumps(config))
    init_ray(load_config(None, []))
    pool = EnginePool(str(model_dir), RolloutConfig(max_model_len=CONTEXT, seed=0))
    yield model_dir, pool
    pool.shutdown()
    ray.shutdown()


def run_job(model_dir: Path, pool: EnginePool, out: Path, *extra: str) -> dict:
    return main(["--model", str(model_dir), "--data-dir", str(EVALDATA), "--output-dir", str(out),
                 f"rollout.max_model_len={CONTEXT}", "reward.num_workers=2", "reward.timeout_s=30", *extra],
                engines=pool)


def test_every_benchmark_generates_and_scores_and_rescoring_agrees(engine, tmp_path: Path) -> None:
    model_dir, pool = engine
    out = tmp_path / "run"
    summary = run_job(model_dir, pool, out, "--benchmarks", ",".join(REGISTRY), "--samples", "2", "--limit", "2",
                      "eval.max_tokens=8", "bench.gsm8k.max_tokens=3")
    assert set(summary["benchmarks"]) == set(REGISTRY)
    for name, m in summary["benchmarks"].items():
        assert (m["problems"], m["k"]) == (2, 2), name
        assert 0.0 <= m["pass@1"] <= m["pass@k"] <= 1.0 and m["truncation_rate"] is not None
    assert summary["sampling"]["gsm8k"] == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 3}
    assert summary["sampling"]["ifeval"]["max_tokens"] == 8
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(REGISTRY) * 2 * 2
    for s in samples:
        assert {"benchmark", "problem_id", "sample", "response", "reward", "reward_info"} <= set(s)
        assert 1 <= s["response_tokens"] <= (3 if s["benchmark"] == "gsm8k" else 8)
        assert s["truncated"] == (s["finish_reason"] == "length")
    code = [s for s in samples if s["benchmark"] in ("livecodebench", "humaneval", "mbpp")]
    assert all(s["reward"] == 0.0 and s["reward_info"]["verdict"] == "no_code_block" for s in code)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["benchmarks"] == summary["benchmarks"] and on_disk["backend"].startswith("vllm ")

    # the saved-responses path scores the same rows the same way, and keeps lengths and truncation
    again = main(["--responses", str(out / "samples.jsonl"), "--data-dir", str(EVALDATA), "--output-dir",
                  str(tmp_path / "rescored"), "reward.num_workers=2", "reward.timeout_s=30"])
    assert again["benchmarks"] == summary["benchmarks"]
    rescored = [json.loads(line) for line in (tmp_path / "rescored" / "samples.jsonl").read_text().splitlines()]
    key = lambda s: (s["benchmark"], str(s["problem_id"]), s["sample"])  # noqa: E731
    assert {key(s): s["reward"] for s in rescored} == {key(s): s["reward"] for s in samples}


def test_a_prompt_longer_than_the_context_stops_before_generation(engine, tmp_path: Path) -> None:
    model_dir, pool = engine
    with pytest.raises(SystemExit, match="benchmark livecodebench: problem 'abc365_b' has a .*-token prompt.*"
                                         "rollout.max_model_len=512"):
        main(["--model", str(model_dir), "--data-dir", str(EVALDATA), "--output-dir", str(tmp_path / "o"),
              "--benchmarks", "gsm8k,livecodebench", "--limit", "1", "rollout.max_model_len=512"], engines=pool)
    assert not (tmp_path / "o").exists()


def test_trainer_hook_returns_flat_metrics(engine) -> None:
    model_dir, pool = engine
    from transformers import AutoTokenizer

    cfg = load_eval_config(None, ["eval.max_tokens=6"])
    bench = cfg.bench
    problems = load_problems(["gsm8k", "ifeval"], EVALDATA, bench, limit=3)
    tasks = prepare_tasks(problems, AutoTokenizer.from_pretrained(str(model_dir)), cfg.eval, bench, CONTEXT)
    with RewardPool(cfg.reward) as rewards:
        metrics = evaluate_benchmarks(pool, rewards, tasks, k=2)
    assert set(metrics) == {f"eval/{b}/{m}" for b in ("gsm8k", "ifeval")
                            for m in ("pass@1", "pass@1_stderr", "pass@2", "response_tokens", "truncation_rate")}
    assert all(isinstance(v, float) for v in metrics.values())
    assert 1.0 <= metrics["eval/gsm8k/response_tokens"] <= 6.0  # eval.max_tokens=6
