"""Datasets as users have them: every form reads the same rows, verl rows train as they come, rows
are checked for what their source's reward reads before anything starts, and every command ends a
user error with one line naming the file, the row or line, and the problem."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import amray
from amray.config import load_config
from amray.data.records import DataError
from amray.data.rows import read_task_rows, task_rows

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    {"id": "m1", "source": "math", "prompt": "What is 2 + 3?", "answer": "5"},
    {"id": 7, "source": "math", "prompt": "What is 9 - 4?", "answer": 5},
    {"id": "c1", "source": "code", "prompt": "Double the input.", "language": "python",
     "tests": {"stdin_stdout": [{"input": "4\n", "output": "8\n"}]}},
    {"id": "i1", "source": "ifeval", "prompt": "Say hello in three words or more.",
     "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"relation": "at least", "num_words": 3}]},
    {"id": "h1", "source": "chat", "prompt": "Tell me about Ray."},
]


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"amray_job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_forms(tmp_path: Path, rows: list[dict]) -> dict[str, Path]:
    """The same rows as JSONL, a JSON list, Parquet, and `datasets` directories (one split, several)."""
    import datasets

    forms = {"jsonl": tmp_path / "rows.jsonl", "json": tmp_path / "rows.json", "parquet": tmp_path / "rows.parquet",
             "saved": tmp_path / "saved", "saved_splits": tmp_path / "saved_splits"}
    forms["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    forms["json"].write_text(json.dumps(rows, indent=1))
    # columnar forms hold one type per column: ids and answers as text there (JSON keeps them as given)
    same_types = [{**r, "id": str(r["id"]), **({"answer": str(r["answer"])} if "answer" in r else {})} for r in rows]
    table = datasets.Dataset.from_list([{k: r.get(k) for k in dict.fromkeys(k for r in rows for k in r)}
                                        for r in same_types])
    table.to_parquet(str(forms["parquet"]))
    table.save_to_disk(str(forms["saved"]))
    datasets.DatasetDict({"train": table.select([0]), "validation": table}).save_to_disk(str(forms["saved_splits"]))
    return forms, same_types


def test_every_form_of_a_dataset_reads_the_same_rows(tmp_path: Path) -> None:
    forms, same_types = write_forms(tmp_path, ROWS)
    assert read_task_rows(forms["jsonl"]) == read_task_rows(forms["json"]) == ROWS
    for name in ("parquet", "saved"):
        assert read_task_rows(forms[name]) == same_types, name
    assert read_task_rows(forms["saved_splits"], "validation") == same_types
    with pytest.raises(DataError, match="no split 'test' .*set data.split"):
        read_task_rows(forms["saved_splits"], "test")
    # the GRPO job reads data.train with data.split the same way
    train_rows = load_job("grpo").train_rows
    cfg = load_config(None, [f"data.train={forms['saved_splits']}", "data.split=validation"])
    assert train_rows(cfg) == (same_types, None)


def test_a_dataset_id_offline_fails_in_one_line_naming_it() -> None:
    """An id goes through `datasets` (its cache, or the Hub); offline and not cached, one line says so."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # read when huggingface_hub is imported
    proc = subprocess.run([sys.executable, "-c", "from amray.data.rows import read_task_rows\n"
                           "read_task_rows('someorg/no-such-set')"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "amray.data.records.DataError: someorg/no-such-set: not a local file or directory, and loading it as a "
        "Hugging Face dataset failed")


def test_verl_rows_are_converted_where_a_run_reads_them(tmp_path: Path) -> None:
    verl = [{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "What is 6 x 7?"}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": "42"}, "extra_info": {"index": 3}},
            {"data_source": "codecontests", "ability": "code", "prompt": [{"role": "user", "content": "Echo."}],
             "reward_model": {"ground_truth": json.dumps({"stdin_stdout": [{"input": "1\n", "output": "1\n"}]})}}]
    path = tmp_path / "verl.parquet"
    import pandas

    pandas.DataFrame(verl).to_parquet(path)
    math, code = read_task_rows(path)
    assert (math["id"], math["source"], math["prompt"], math["answer"]) == ("openai/gsm8k/3", "math", "What is 6 x 7?", "42")
    assert (code["source"], code["language"], code["tests"]) == ("code", "python", {"stdin_stdout": [
        {"input": "1\n", "output": "1\n"}]})


@pytest.mark.parametrize("row, message", [
    ({"id": 1, "source": "math", "prompt": "What is 2 + 2?"}, "row 2 of {f}: field `answer` is missing (source `math` needs it)"),
    ({"id": 1, "source": "math", "prompt": "What is 2 + 2?", "answer": " "}, "row 2 of {f}: field `answer` is empty"),
    ({"id": 1, "source": "code", "prompt": "Echo.", "language": "python"}, "row 2 of {f}: field `tests` is missing"),
    ({"id": 1, "source": "code", "prompt": "Echo.", "language": "python", "tests": "{broken"},
     "row 2 of {f}: field `tests` is a string but not JSON"),
    ({"id": 1, "source": "poetry", "prompt": "A poem."}, "row 2 of {f}: field `source` is 'poetry'; expected one of"),
    ({"prompt": "What is 2 + 2?", "answer": "4"}, "row 2 of {f}: fields `id`, `source` are missing"),  # TRL-style
    ({"id": 1, "source": "ifeval", "prompt": [{"role": "user", "content": "Hi"}], "instruction_id_list": [],
      "kwargs": []}, "row 2 of {f}: field `prompt` must be str"),
])
def test_a_bad_row_stops_the_grpo_job_before_anything_starts(tmp_path: Path, row: dict, message: str) -> None:
    import ray

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(SystemExit) as stop:
        load_job("grpo").main(["--output-dir", str(tmp_path / "run"), f"data.train={train}"])
    assert str(stop.value.code).startswith("error: " + message.format(f=train))
    assert not ray.is_initialized() and not (tmp_path / "run").exists()


def test_custom_sources_are_known_by_their_reward(tmp_path: Path) -> None:
    import ray

    mine = [{"id": "a", "source": "mine", "prompt": "Say a word.", "anything": 1}]
    assert task_rows(mine, "rows", ["mine"]) == mine  # a custom reward reads what it likes: no field required
    run = amray.Run(None, ["log.progress=false"], output_dir=tmp_path / "run", train=mine)
    with pytest.raises(DataError, match="row 1 of the train rows: field `source` is 'mine'.*Run.add_reward"):
        run.start()  # not registered: refused before Ray or any actor starts
    assert not ray.is_initialized()
    train = tmp_path / "mine.jsonl"
    train.write_text(json.dumps(mine[0]) + "\n")
    cfg = load_config(None, [f"data.train={train}", f"reward.custom={ROOT / 'tests/data/first_letter_reward.py'}:reward",
                             "reward.custom_source=mine"])
    assert load_job("grpo").train_rows(cfg) == (mine, None)  # the job's reward.custom source


BAD_BYTES = b'{"id": 1, "source": "math", "prompt": "1 + 1?", "answer": "2"}\n{"id": 2, "prompt": "caf\xe9"}\n'
MALFORMED = b'{"id": 1, "source": "math", "prompt": "1 + 1?", "answer": "2"}\n{"id": 2, "prompt": \n'


def user_error(argv_for, tmp_path: Path, content: bytes | None, job: str, capsys) -> str:
    """The last line a job ends with, given a file of `content` (None: no file)."""
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_bytes(content)
    argv = argv_for(path, tmp_path)
    try:
        if job == "preprocess":
            from amray.data.preprocess import main, run

            code = run(main, argv)
        else:
            load_job(job).main(argv)
            code = 0
    except SystemExit as e:
        code = e.code
    assert code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    return code if isinstance(code, str) else err[-1]


JOBS = {
    "grpo": lambda p, t: ["--output-dir", str(t / "run"), f"data.train={p}"],
    "sft": lambda p, t: ["--output-dir", str(t / "run"), f"data.sft={p}"],
    "evaluate": lambda p, t: ["--responses", str(p), "--data-dir", str(t), "--output-dir", str(t / "run")],
    "pass_rate": lambda p, t: ["--input", str(p), "--ledger", str(t / "ledger"), "--output-dir", str(t / "run")],
    "preprocess": lambda p, t: ["--input", str(p), "--output", str(t / "out.jsonl"), "--report", str(t / "r.json")],
}


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("content, problem", [
    (None, "{f}: "), (b"", "{f}: no "), (BAD_BYTES, "line 2 of {f}: not UTF-8 text (byte 0xe9 at column 25)"),
    (MALFORMED, "line 2 of {f}: not valid JSON"),
], ids=["missing", "empty", "non-utf8", "malformed"])
def test_every_command_ends_a_bad_file_in_one_line_naming_it(job: str, content: bytes | None, problem: str,
                                                             tmp_path: Path, capsys) -> None:
    import ray

    line = user_error(JOBS[job], tmp_path, content, job, capsys)
    assert line.startswith("error: ") and problem.format(f=tmp_path / "data.jsonl") in line, line
    assert "\n" not in line and not ray.is_initialized()


@pytest.mark.parametrize("job", ["grpo", "sft", "pass_rate"])
def test_a_missing_config_file_is_named(job: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        load_job(job).main(["--config", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: config file {tmp_path / 'nope.yaml'}: cannot be read (No such file or directory)")


def test_the_scorer_writes_every_line_in_order_bad_bytes_included(tmp_path: Path) -> None:
    rows = [{"id": "a", "source": "math", "response": "\\boxed{4}", "answer": "4"},
            {"id": "b", "source": "math", "response": "\\boxed{5}", "answer": "4"}]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes(json.dumps(rows[0]).encode() + b"\n\xff\xfe not text\n\n" + json.dumps(rows[1]).encode() + b"\n")
    proc = subprocess.run([sys.executable, "-m", "amray.rewards", "score", "--input", str(inp), "--output", str(out),
                           "--workers", "1", "log.progress=false"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w.get("id") for w in written] == ["a", None, "b"] and [w["reward"] for w in written] == [1.0, 0.0, 0.0]
    assert written[1]["line"] == 2 and written[1]["reward_info"]["error"] == \
        f"line 2 of {inp}: not UTF-8 text (byte 0xff at column 1)"
