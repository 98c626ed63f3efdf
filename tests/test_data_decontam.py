"""Decontamination against the real eval sets: every file layout, exact, 13-gram and embedding matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amray.data.config import DecontaminationConfig
from amray.data.decontam import Decontaminator, load_eval_queries, normalize
from amray.data.embed import nearest
from amray.data.preprocess import main
from amray.data.rows import DataError

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
pytestmark = needs_evaldata

# Reworded AMC 2023 problem 1 (cosine 0.87 to the original, no 13 words in a row in common).
REWORDED_AMC = ("Alicia and Beth live 45 miles apart and bike toward each other at 18 and 12 mph. "
                "After how many miles from Alicia's city do they meet?")
SAME_THEME = "Every morning Bob jogs 5 km to a bakery. At speed v km/h the trip takes 1 hour. How long does it take at 2v?"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


def test_every_eval_file_layout_is_read() -> None:
    counts = {"aime2024.jsonl": 30, "aime2025.jsonl": 30, "amc2023.jsonl": 40, "math500.jsonl": 500,
              "gsm8k_test.jsonl": 1319, "humaneval.jsonl": 164, "mbpp.jsonl": 974, "codeforces_test.json": 408,
              "code_contests_test.json": 165, "leetcode_test.json": 200, "livecodebench_v5_test_public.json": 279,
              "ifeval_input_data.jsonl": 541}
    queries = load_eval_queries([EVALDATA / name for name in counts])
    assert {name: sum(q.file == name for q in queries) for name in counts} == counts
    assert all(q.text.strip() for q in queries)


def test_eval_row_without_a_query_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"problem": "What is 1+1?"}\n{"answer": "2"}\n')
    with pytest.raises(DataError, match=r"row 2 of .*eval.jsonl: no query field \(looked for prompt, problem"):
        load_eval_queries([bad])


def test_exact_match_ignores_the_harness_instruction() -> None:
    decon = Decontaminator(load_eval_queries([EVALDATA / "aime2025.jsonl"]), DecontaminationConfig())
    bare = "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$"
    assert decon.exact("  " + bare.upper()) == "same text as aime2025.jsonl row 1"
    assert decon.exact(bare.replace("b>9", "b>10")) is None


def test_semantic_match_catches_a_rewording_not_a_new_problem(cache_dir: Path) -> None:
    cfg = DecontaminationConfig(embedding_cache_dir=str(cache_dir))
    decon = Decontaminator(load_eval_queries([EVALDATA / "amc2023.jsonl"]), cfg)
    queries = [SAME_THEME, REWORDED_AMC, "Write a Python function that reverses a string."]
    assert [decon.ngram(q) for q in queries] == [None, None, None]  # only the embedding can see it
    found = decon.semantic(queries)
    assert list(found) == [1]
    assert found[1].startswith("cosine 0.8") and found[1].endswith("with amc2023.jsonl row 1")

    cached = list(cache_dir.glob("*.npy"))
    assert len(cached) == 1  # the eval embeddings are kept for the next run
    again = Decontaminator(decon.evals, cfg)
    again.semantic([SAME_THEME])
    np.testing.assert_array_equal(again._embeddings, np.load(cached[0]))


def test_command_reports_embedding_matches(tmp_path: Path, cache_dir: Path) -> None:
    rows = [{"id": "reworded", "source": "math", "prompt": REWORDED_AMC, "answer": "27"},
            {"id": "fresh", "source": "math", "prompt": SAME_THEME, "answer": "30"}]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json"),
                "--rejects", str(tmp_path / "rej.jsonl"), f"decontamination.embedding_cache_dir={cache_dir}",
                "--decontaminate", str(EVALDATA / "amc2023.jsonl")])
    assert rep["rejected_by_rule"]["contaminated_embedding"] == 1
    assert [json.loads(line)["id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()] == ["fresh"]
    assert json.loads((tmp_path / "rej.jsonl").read_text())["reject_rule"] == "contaminated_embedding"


def test_bfloat16_embeddings_decide_exactly_as_float32(cache_dir: Path) -> None:
    """The bf16 pass is re-checked in fp32 near the threshold: with the threshold set exactly at a
    query's fp32 score, where its bf16 score falls on the other side, the decision is still fp32's."""
    evals = load_eval_queries([EVALDATA / "amc2023.jsonl", EVALDATA / "aime2024.jsonl"])
    queries = [REWORDED_AMC, SAME_THEME, "How many positive divisors does 2024 have?",
               "Alicia and Beth bike toward each other from cities 45 miles apart.",
               "Find the number of ordered pairs of integers (a, b) with a + b = 10 and ab = 21."]
    base = dict(embedding_cache_dir=str(cache_dir), embedding_dtype="float32")
    exact = Decontaminator(evals, DecontaminationConfig(**base))
    exact.semantic(queries)
    texts = [normalize(q) for q in queries]  # as semantic() embeds them
    _, fp32 = nearest(exact._embedder.encode(texts, exact=True), exact._embeddings)
    fast = Decontaminator(evals, DecontaminationConfig(**dict(base, embedding_dtype="bfloat16")))
    fast.semantic(queries[:1])
    assert fast._embedder.fast and not exact._embedder.fast
    _, bf16 = nearest(fast._embedder.encode(texts), fast._embeddings)
    assert 0 < np.abs(bf16 - fp32).max() < 0.01
    k = int(np.argmax(fp32 - bf16))  # its bf16 score is below its fp32 score
    for threshold in (float(fp32[k]), float(fp32[k]) + 1e-6, 0.85):
        cfg = dict(base, embedding_threshold=threshold)
        want = set(Decontaminator(evals, DecontaminationConfig(**cfg)).semantic(queries))
        got = set(Decontaminator(evals, DecontaminationConfig(**dict(cfg, embedding_dtype="bfloat16"))).semantic(queries))
        assert got == want, threshold
    assert k in set(Decontaminator(evals, DecontaminationConfig(**dict(base, embedding_threshold=float(fp32[k]),
                                                                        embedding_dtype="bfloat16"))).semantic(queries))


def test_a_decision_does_not_depend_on_the_other_queries_in_the_call(cache_dir: Path) -> None:
    """Float32 embeds each query alone: with the threshold set exactly at one query's score, that
    query is kept or dropped the same way alone, in a batch, and in the bf16-first path."""
    evals = load_eval_queries([EVALDATA / "amc2023.jsonl"])
    queries = [REWORDED_AMC, SAME_THEME, "Alicia and Beth bike toward each other from cities 45 miles apart.",
               "How many positive divisors does 2024 have?"]
    base = dict(embedding_cache_dir=str(cache_dir), embedding_dtype="float32")
    probe = Decontaminator(evals, DecontaminationConfig(**base))
    probe.semantic(queries[:1])
    _, alone = nearest(np.stack([probe._embedder.encode([normalize(q)])[0] for q in queries]), probe._embeddings)
    _, together = nearest(probe._embedder.encode([normalize(q) for q in queries]), probe._embeddings)
    np.testing.assert_array_equal(alone, together)  # bitwise: no batch effect at all
    for k in range(len(queries)):
        for dtype in ("float32", "bfloat16"):
            cfg = DecontaminationConfig(**dict(base, embedding_dtype=dtype, embedding_threshold=float(alone[k])))
            decon = Decontaminator(evals, cfg)
            assert k in decon.semantic(queries), (k, dtype)  # score == threshold: a match
            assert 0 in decon.semantic([queries[k]]), (k, dtype)
