"""amray task rows: the schema every training file is checked against, and verl rows converted.

An amray row has `id`, `source`, `prompt` (the user query as text, or a message list; a `messages`
field is accepted too) and the source's ground-truth fields. verl rows (`data_source`, `prompt` as
messages, `reward_model.ground_truth`, `extra_info`) are converted on reading. Files are read by
`amray.data.records`; anything unusable raises `DataError` naming the file, the row (1-based) and
the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from amray.data.records import DataError, read_records
from amray.rewards import SOURCES

# verl's `ability` / `data_source` values, mapped to amray sources (first keyword found wins).
_VERL_KEYWORDS = (
    ("ifeval", "ifeval"), ("code", "code"), ("apps", "code"), ("taco", "code"), ("leetcode", "code"),
    ("livecodebench", "code"), ("codeforces", "code"), ("primeintellect", "code"), ("kodcode", "code"),
    ("gpqa", "science"), ("science", "science"), ("stem", "science"), ("mcq", "mcq"),
    ("math", "math"), ("gsm8k", "math"), ("aime", "math"), ("amc", "math"), ("numina", "math"),
    ("deepscaler", "math"), ("olympiad", "math"), ("chat", "chat"), ("general", "chat"),
)


@dataclass
class Row:
    number: int
    """1-based position in the input file (what error messages and rejects refer to)."""
    data: dict
    """The amray row as it will be written."""

    @property
    def id(self) -> str:
        """The row's `id` as text (the row itself keeps it as it was given)."""
        return str(self.data["id"])

    @property
    def source(self) -> str:
        return self.data["source"]

    @property
    def prompt(self) -> str | list[dict]:
        return self.data["prompt"] if "prompt" in self.data else self.data["messages"]

    @property
    def query(self) -> str:
        """The user query: `prompt` text, or the user turns of a message list joined by newlines."""
        return prompt_text(self.prompt)

    @property
    def last_turn(self) -> str:
        """The question being asked: `prompt` text, or the last user turn of a message list."""
        prompt = self.prompt
        return prompt if isinstance(prompt, str) else [m for m in prompt if m["role"] == "user"][-1]["content"]

    def set_last_turn(self, text: str) -> None:
        prompt = self.prompt
        if isinstance(prompt, str):
            self.data["prompt"] = text
            return
        last = max(i for i, m in enumerate(prompt) if m["role"] == "user")
        prompt[last] = {**prompt[last], "content": text}


def prompt_text(prompt: str | list[dict]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt if m["role"] == "user")


def read_rows(path: str | Path, split: str = "train") -> list[Row]:
    """amray rows of a training file, verl rows converted; ids unique, fields checked."""
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, record in enumerate(read_records(path, split), start=1):
        where = f"row {number} of {path}"
        if "data_source" in record and "reward_model" in record:
            record = from_verl(record, number, where)
        rows.append(Row(number, check_row(record, where)))
        first = seen.setdefault(rows[-1].id, number)
        if first != number:
            raise DataError(f"{where}: id {rows[-1].id!r} is already used by row {first}; ids must be unique")
    return rows


def check_row(record: dict, where: str) -> dict:
    field = "prompt" if "prompt" in record or "messages" not in record else "messages"
    for name in ("id", "source", field):
        if record.get(name) is None:
            hint = " (or `messages`)" if name == "prompt" else ""
            raise DataError(f"{where}: field `{name}`{hint} is missing")
    if isinstance(record["id"], bool) or not isinstance(record["id"], (str, int)):
        raise DataError(f"{where}: field `id` must be a string or integer, got {type(record['id']).__name__}")
    if record["source"] not in SOURCES:
        raise DataError(f"{where}: field `source` is {record['source']!r}; expected one of {', '.join(SOURCES)}")
    prompt = record[field]
    if isinstance(prompt, list):
        for i, m in enumerate(prompt):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: field `{field}` message {i} needs string `role` and `content`, got {m!r}")
        if not any(m["role"] == "user" for m in prompt):
            raise DataError(f"{where}: field `{field}` has no message with role `user`")
    elif not isinstance(prompt, str):
        raise DataError(f"{where}: field `{field}` must be text or a message list, got {type(prompt).__name__}")
    if not prompt_text(prompt).strip():
        raise DataError(f"{where}: field `{field}` is empty")
    return record


def from_verl(record: dict, number: int, where: str) -> dict:
    """A verl row as an amray row: source from `ability`/`data_source`, ground truth by source."""
    extra = record.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise DataError(f"{where}: field `extra_info` must be an object, got {type(extra).__name__}")
    reward = record["reward_model"]
    if not isinstance(reward, dict) or reward.get("ground_truth") is None:
        raise DataError(f"{where}: field `reward_model.ground_truth` is missing")
    source = verl_source(record)
    if source is None:
        raise DataError(f"{where}: cannot tell the source of data_source={record['data_source']!r} "
                        f"(ability={record.get('ability')!r}); give it an `ability` of: {', '.join(SOURCES)}")
    prompt = record.get("prompt")
    if prompt is None:
        raise DataError(f"{where}: field `prompt` is missing")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], dict) and prompt[0].get("role") == "user":
        prompt = prompt[0].get("content")  # a lone user turn is the query text itself
    row = {"id": extra.get("id", f"{record['data_source']}/{extra.get('index', number - 1)}"),
           "source": source, "prompt": prompt, "data_source": record["data_source"]}
    truth = reward["ground_truth"]
    if source == "code":
        if isinstance(truth, str):
            try:
                truth = json.loads(truth)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: field `reward_model.ground_truth` of a code row is not JSON tests: {e}") from e
        row["tests"] = truth
        row["language"] = extra.get("language", "python")
    elif source == "ifeval" and isinstance(truth, dict):
        row.update(truth)  # instruction_id_list / kwargs
    elif source in ("math", "science", "mcq"):
        row["answer"] = truth if isinstance(truth, str) else json.dumps(truth) if isinstance(truth, list) else str(truth)
    else:
        row["ground_truth"] = truth
    if extra:
        row["extra_info"] = extra
    return row


def verl_source(record: dict) -> str | None:
    for key in (str(record.get("ability") or ""), str(record["data_source"])):
        for word, source in _VERL_KEYWORDS:
            if word in key.lower():
                return source
    return None
