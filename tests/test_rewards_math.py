"""Math reward: last-box extraction, symbolic equivalence, hard time bound, and the Ray pool."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from amray.rewards import RewardConfig, RewardResult, score_row
from amray.rewards.isolation import TimedWorkerProcess, WorkerError, WorkerTimeout
from amray.rewards.math import last_boxed, score_math
from amray.rewards.pool import RewardPool

POWER_TOWER = r"The answer is \boxed{9^{9^{9^{9^{9^{9^{9}}}}}}}"


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{x^{2^{3}} + \{1, 2\}}", r"x^{2^{3}} + \{1, 2\}"),
    (r"first \boxed{3}, then \fbox{4}, finally \boxed{5}", "5"),
    (r"$\boxed 7$", "7"),
    (r"\boxed {8}", "8"),
    ("no box here", None),
    (r"truncated \boxed{1} and \boxed{\frac{1}{", None),  # the last box is unclosed: no answer
    (r"\boxedx{3}", None),
])
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize("response, answer", [
    (r"\boxed{25}", "025"),            # AIME answers are zero-padded
    (r"\boxed{025}", 25),
    (r"\boxed{27}", 27.0),             # AMC answers are floats
    (r"\boxed{27.0}", "27"),
    (r"\boxed{0.5}", r"\frac{1}{2}"),
    (r"\boxed{\dfrac12}", "0.5"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
    (r"\boxed{x = 5}", "5"),
    (r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\text{(C)}}", "C"),
])
def test_equivalent_answers_score_one(response: str, answer: str | int | float) -> None:
    result = score_math("Reasoning... " + response, answer)
    assert result.reward == 1.0, result.info
    assert result.info["verdict"] == "correct"


def test_only_the_last_box_counts() -> None:
    # math-verify on the whole text would accept either box; the model must commit to one answer
    hedged = r"It is \boxed{3}... no wait, \boxed{4}."
    assert score_math(hedged, "4").reward == 1.0
    assert score_math(hedged, "3").reward == 0.0
    assert score_math(hedged, "3").info["extracted"] == "4"


def test_wrong_and_missing_answers_score_zero() -> None:
    assert score_math(r"\boxed{\frac{1}{3}}", "0.5").reward == 0.0
    no_box = score_math("The answer is 25.", "25")
    assert no_box.reward == 0.0 and no_box.info["verdict"] == "no_boxed_answer"


def test_pathological_expression_is_cut_at_the_bound() -> None:
    start = time.monotonic()
    result = score_math(POWER_TOWER, "3", timeout_s=1.5)
    assert time.monotonic() - start < 4.0
    assert result.reward == 0.0 and result.info["error"] == "timeout after 1.5 s"
    assert score_math(r"\boxed{4}", "4").reward == 1.0  # a fresh child takes over


def test_timed_worker_reports_errors_and_timeouts() -> None:
    worker = TimedWorkerProcess()
    try:
        assert worker.call("os.path:join", ("a", "b"), timeout_s=10) == "a/b"
        with pytest.raises(WorkerError, match="ZeroDivisionError"):
            worker.call("operator:truediv", (1, 0), timeout_s=10)
        with pytest.raises(WorkerTimeout, match="timeout after 0.5 s"):
            worker.call("time:sleep", (30,), timeout_s=0.5)
        assert worker.call("operator:add", (2, 3), timeout_s=10) == 5
        assert worker.restarts == 2
    finally:
        worker.close()


def test_score_math_works_off_the_main_thread() -> None:
    # signal.alarm-based timeouts fail here; ours must not
    results: list[RewardResult] = []
    thread = threading.Thread(target=lambda: results.append(score_math(r"\boxed{\frac{2}{4}}", "0.5")))
    thread.start()
    thread.join(30)
    assert results and results[0].reward == 1.0, results


@pytest.mark.parametrize("row, error", [
    ({"id": 1, "response": "x"}, "field `source` is missing"),
    ({"id": 1, "source": "poetry", "response": "x"}, "unknown source 'poetry'"),
    ({"id": 1, "source": "math", "answer": "1"}, "field `response` is missing"),
    ({"id": 1, "source": "math", "response": r"\boxed{1}"}, "field `answer` is missing"),
    ({"id": 1, "source": "math", "response": r"\boxed{1}", "answer": [1]}, "field `answer` must be str or int or float"),
    ("not a dict", "a row must be a JSON object"),
])
def test_bad_rows_score_zero_with_the_reason(row: dict, error: str) -> None:
    result = score_row(row)
    assert result.reward == 0.0
    assert error in result.info["error"]
    assert "elapsed_s" in result.info


@pytest.fixture(scope="module")
def pool():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    pool = RewardPool(RewardConfig(num_workers=2, timeout_s=2.0))
    pool.warmup()
    yield pool
    pool.shutdown()
    ray.shutdown()


def _math_rows(n: int) -> list[dict]:
    return [{"id": i, "source": "math", "response": f"so \\boxed{{{i}}}", "answer": str(i if i % 3 else i + 1)}
            for i in range(n)]


def test_pool_scores_rows_in_order(pool: RewardPool) -> None:
    rows = _math_rows(60)
    results = pool.score_many(rows)
    assert [r.reward for r in results] == [0.0 if i % 3 == 0 else 1.0 for i in range(60)]
    assert sorted(r.info["elapsed_s"] for r in results)[30] < 0.05  # median per-row latency


def test_pool_submit_from_a_thread(pool: RewardPool) -> None:
    refs: list[ray.ObjectRef] = []
    thread = threading.Thread(target=lambda: refs.extend(pool.submit(row) for row in _math_rows(10)))
    thread.start()
    thread.join(30)
    assert [pool.result(ref).reward for ref in refs] == [0.0 if i % 3 == 0 else 1.0 for i in range(10)]


def test_a_hung_row_holds_one_worker_only_for_its_bound(pool: RewardPool) -> None:
    start = time.monotonic()
    hung = pool.submit({"id": "tower", "source": "math", "response": POWER_TOWER, "answer": "1"})
    time.sleep(0.2)  # the hung row is now running on one worker
    quick = pool.score_many(_math_rows(12))
    quick_s = time.monotonic() - start
    assert [r.reward for r in quick] == [0.0 if i % 3 == 0 else 1.0 for i in range(12)]
    assert quick_s < 1.9  # served by the other worker while the tower runs
    result = pool.result(hung)
    assert result.reward == 0.0 and result.info["error"] == "timeout after 2 s"
    assert time.monotonic() - start < 4.0


def test_pool_turns_bad_rows_into_errors(pool: RewardPool) -> None:
    results = pool.score_many([{"id": 7, "source": "math", "response": "x"}, {"id": 8}])
    assert [r.reward for r in results] == [0.0, 0.0]
    assert "field `answer` is missing" in results[0].info["error"]


def test_pool_scores_mixed_sources_in_order(pool: RewardPool) -> None:
    import shutil

    code = {"id": "c", "source": "code", "language": "python", "response": "```python\nprint(int(input()) + 1)\n```",
            "tests": {"stdin_stdout": [{"input": "41\n", "output": "42\n"}]}}
    rows = [_math_rows(2)[1], {"id": "q", "source": "mcq", "response": "Answer: B", "answer": "B"}, code, _math_rows(1)[0]]
    results = pool.score_many(rows)
    assert [r.reward for r in results] == [1.0, 1.0, 1.0 if shutil.which("bwrap") else 0.0, 0.0]


def test_a_batch_is_one_call_whose_rows_are_scored_apart_and_outlive_the_router(pool: RewardPool) -> None:
    """submit_many: the rows of one call still go to the free workers one by one (two hung rows
    hold the two workers side by side, not one after the other), and a router killed meanwhile is
    replaced with the whole batch sent again."""
    tower = {"id": "tower", "source": "math", "response": POWER_TOWER, "answer": "1"}
    rows = [tower, tower, *_math_rows(12)]
    start = time.monotonic()
    results = pool.result(pool.submit_many(rows))
    assert [r.reward for r in results] == [0.0, 0.0] + [0.0 if i % 3 == 0 else 1.0 for i in range(12)]
    assert [r.info["error"] for r in results[:2]] == ["timeout after 2 s"] * 2
    assert time.monotonic() - start < 3.5  # one after the other would take two bounds (4 s)
    restarts = pool.router_restarts
    ref = pool.submit_many(rows[1:])  # in flight for the tower's bound
    time.sleep(0.3)
    ray.kill(pool._router)
    results = pool.result(ref, timeout_s=60)
    assert [r.reward for r in results] == [0.0] + [0.0 if i % 3 == 0 else 1.0 for i in range(12)]
    assert pool.router_restarts == restarts + 1
