"""Reading and writing data rows: JSONL / JSON / Parquet through `datasets`, checked row by row.

An amray row has `id`, `source`, `prompt` (the user query as text, or a message list; a `messages`
field is accepted too) and the source's ground-truth fields. verl rows (`data_source`, `prompt` as
messages, `reward_model.ground_truth`, `extra_info`) are converted on reading. Anything that cannot
be read raises `DataError` naming the file, the row (1-based) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("math", "code", "science", "mcq", "ifeval", "chat")
"""`mcq` is the reward module's name for multiple-choice science; both are accepted."""

_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# verl's `ability` / `data_source` values, mapped to amray sources (first keyword found wins).
_VERL_KEYWORDS = (
    ("ifeval", "ifeval"), ("code", "code"), ("apps", "code"), ("taco", "code"), ("leetcode", "code"),
    ("livecodebench", "code"), ("codeforces", "code"), ("primeintellect", "code"), ("kodcode", "code"),
    ("gpqa", "science"), ("science", "science"), ("stem", "science"), ("mcq", "mcq"),
    ("math", "math"), ("gsm8k", "math"), ("aime", "math"), ("amc", "math"), ("numina", "math"),
    ("deepscaler", "math"), ("olympiad", "math"), ("chat", "chat"), ("general", "chat"),
)


class DataError(ValueError):
    """A file or row that cannot be used; the message names the file, row and field."""


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


def read_records(path: str | Path) -> list[dict]:
    """The raw records of a JSONL, JSON-list or Parquet file, read with `datasets`."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - re-raised with the row and field that caused it
        if fmt == "json":
            _diagnose_json(path)
        raise DataError(f"{path}: could not be read by datasets ({type(e).__name__}: {e})") from e
    if fmt == "json" and "Json(" in repr(ds.features):
        # datasets 5.2 stores a field of mixed types as Json() and decodes its strings as JSON on the
        # way out ("007" -> 7, "true" -> True): take such files from the JSON parser as written.
        return _json_records(path)
    # datasets gives every row every column, None where a row had none: drop those again.
    return [_drop_none(r) for r in ds.to_list()]


def read_rows(path: str | Path) -> list[Row]:
    """amray rows of a training file, verl rows converted; ids unique, fields checked."""
    path = Path(path)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, record in enumerate(read_records(path), start=1):
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


def write_rows(path: str | Path, records: list[dict]) -> None:
    """JSONL (one object a line, written as is) or Parquet, chosen by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        import datasets

        if conflict := _type_conflict(records):
            raise DataError(f"{path}: cannot write Parquet, row {conflict[0]}: {conflict[1]}; write .jsonl instead")
        columns = list(dict.fromkeys(k for r in records for k in r))  # from_list reads the first row's keys only
        datasets.Dataset.from_list([{k: r.get(k) for k in columns} for r in records]).to_parquet(str(path))
        return
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _drop_none(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _json_records(path: Path) -> list[dict]:
    """The records of a JSONL or JSON-list file by the standard parser; bad JSON names its row."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"row {len(records) + 1} (line {number}) of {path}: not valid JSON: {e.msg}") from e
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataError(f"row {number} of {path}: expected a JSON object, got {type(record).__name__}")
    return records


def _diagnose_json(path: Path) -> None:
    """Find the row and field that made `datasets` fail (bad JSON, a field of two types)."""
    records = _json_records(path)
    if conflict := _type_conflict(records):
        number, what = conflict
        raise DataError(f"row {number} of {path}: {what}; give the field one type in every row")


def _type_conflict(records: list[dict]) -> tuple[int, str] | None:
    """(row, 'field `f` is X here but Y in row M') for the first field of two types, else None."""
    kinds: dict[str, tuple[str, int]] = {}
    for number, record in enumerate(records, start=1):
        for name, value in record.items():
            kind = _kind(value)
            if kind is None:
                continue
            first = kinds.setdefault(name, (kind, number))
            if first[0] != kind:
                return number, f"field `{name}` is {kind} here but {first[0]} in row {first[1]}"
    return None


def _kind(value: object) -> str | None:
    """The JSON type of a value as Arrow must store it (None: compatible with anything)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        inner = {_kind(v) for v in value} - {None}
        if not inner:
            return None
        return "list of mixed types" if len(inner) > 1 else f"list of {inner.pop()}"
    return "object"
