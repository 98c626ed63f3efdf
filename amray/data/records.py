"""Every data file amray reads or writes goes through here: one reader, one writer.

    read_records("train.jsonl")         # .jsonl / .json (a list, or one object a line)
    read_records("train.parquet")       # Parquet
    read_records("saved_dir")           # a directory written by `datasets.Dataset.save_to_disk`
    read_records("org/name", split="train")   # a Hugging Face dataset id (through `datasets`)
    write_records("out.jsonl", rows, append=False)   # .jsonl, or .parquet by suffix

JSON is read by the standard parser, as written (no type coercion); anything that cannot be read
raises `DataError` naming the file, the line or row (1-based) and the problem: a missing file,
bytes that are not UTF-8, a malformed line, a row that is not an object. A local path never
touches the network; only a name that is not an existing path is looked up as a dataset id.
"""

from __future__ import annotations

import json
from pathlib import Path

JSON_SUFFIXES = (".jsonl", ".json")


class DataError(ValueError):
    """A file or row that cannot be used; the message names the file, row and field."""


def read_records(path: str | Path, split: str = "train") -> list[dict]:
    """The records of a data file, directory or dataset id, each a dict, in file order."""
    p = Path(path)
    if p.is_dir():
        return _saved_dataset(p, split)
    suffix = p.suffix.lower()
    if suffix in JSON_SUFFIXES or suffix == ".parquet":
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        return _json_records(p) if suffix in JSON_SUFFIXES else _parquet_records(p)
    if p.exists():
        raise DataError(f"{p}: unsupported file type {p.suffix!r} (use .jsonl, .json, .parquet, "
                        "a `datasets` save_to_disk directory, or a Hugging Face dataset id)")
    if _looks_like_dataset_id(str(path)):
        return _hub_dataset(str(path), split)
    raise DataError(f"{path}: no such file")


def iter_json_lines(path: Path):
    """(line number, parsed value or DataError) for each non-blank line of a JSON-lines file;
    a line that cannot be read (bad bytes, bad JSON) yields its error instead of stopping."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield number, json_line(raw, number, path)


def json_line(raw: bytes, number: int, path: str | Path) -> object:
    """Line `number` of a JSON-lines file parsed, or the DataError saying why it cannot be."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(f"line {number} of {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return DataError(f"line {number} of {path}: not valid JSON ({e.msg}, column {e.colno})")


def _json_records(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):  # one JSON list
        try:
            records = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    else:
        records = []
        for number, value in iter_json_lines(path):
            if isinstance(value, DataError):
                raise value
            if not isinstance(value, dict):
                raise DataError(f"line {number} of {path}: expected a JSON object, got {type(value).__name__}")
            records.append(value)
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataError(f"row {number} of {path}: expected a JSON object, got {type(record).__name__}")
    return records


def _parquet_records(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return [_drop_none(r) for r in table.to_pylist()]


def _saved_dataset(path: Path, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: a directory, but not one written by datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r} (has {', '.join(ds)}); set data.split")
        ds = ds[split]
    return [_drop_none(r) for r in ds.to_list()]


def _looks_like_dataset_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def _hub_dataset(name: str, split: str) -> list[dict]:
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no such split: one clear line
        raise DataError(f"{name}: not a local file or directory, and loading it as a Hugging Face dataset "
                        f"failed ({type(e).__name__}: {str(e)[:300]})") from None
    return [_drop_none(r) for r in ds.to_list()]


def write_records(path: str | Path, records: list[dict], append: bool = False) -> None:
    """JSONL (one object a line, written as is) or Parquet, chosen by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        import datasets

        if append:
            raise DataError(f"{path}: Parquet files are written whole; append to a .jsonl file")
        if conflict := _type_conflict(records):
            raise DataError(f"{path}: cannot write Parquet, row {conflict[0]}: {conflict[1]}; write .jsonl instead")
        columns = list(dict.fromkeys(k for r in records for k in r))  # from_list reads the first row's keys only
        datasets.Dataset.from_list([{k: r.get(k) for k in columns} for r in records]).to_parquet(str(path))
        return
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _drop_none(value: object) -> object:
    """Columnar formats give every row every column (None where a row had none): drop those."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


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
