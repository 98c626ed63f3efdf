"""amray task rows: the schema every training file is checked against, and verl rows converted.

An amray row has `id`, `source`, `prompt` (the user query as text, or a message list; a `messages`
field is accepted too) and the source's ground-truth fields (`GROUND_TRUTH`). verl rows
(`data_source`, `prompt` as messages, `reward_model.ground_truth`, `extra_info`) are converted on
reading. Files are read by `amray.data.records`; anything unusable raises `DataError` naming the
file, the row (1-based) and the field.

    read_rows(path)                          # preprocessing: the schema; ground truth may still be missing
    read_task_rows(path, split, ["mine"])    # a run's rows: each has what its source's reward reads
    chat_rows(records, "sft.jsonl")          # SFT conversations (`messages`, or `prompt` + `completion`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from amray.data.records import DataError, read_records
from amray.rewards import SOURCES, RowError, require

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


GROUND_TRUTH: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "math": (("answer", (str, int, float)),),
    "science": (("answer", str),), "mcq": (("answer", str),),
    "code": (("tests", (dict, str)), ("language", str)),
    "ifeval": (("prompt", str), ("instruction_id_list", list), ("kwargs", list)),
    "chat": (("prompt", str),),
}
"""What each built-in source's reward reads from a row besides the response (amray.rewards.score_row):
a run checks every row for it before any actor starts, instead of training on reward 0."""


def read_rows(path: str | Path, split: str = "train") -> list[Row]:
    """amray rows of a training file, verl rows converted; ids unique, fields checked."""
    return [Row(n, r) for n, r in _checked(read_records(path, split), str(path), SOURCES, ground_truth=False)]


def read_task_rows(path: str | Path, split: str = "train", custom_sources: tuple[str, ...] | list[str] = ()) -> list[dict]:
    """The rows a run trains or evaluates on (`data.train`, `data.eval`), in any form read_records
    reads: verl rows converted, ids unique, and each row holding what its source's reward reads.
    `custom_sources`: sources scored by custom rewards (reward.custom, Run.add_reward); their rows
    need only `id` and a prompt."""
    return task_rows(read_records(path, split), str(path), custom_sources)


def task_rows(records: list[dict], origin: str, custom_sources: tuple[str, ...] | list[str] = ()) -> list[dict]:
    """`read_task_rows` for rows already in memory; `origin` names them in errors."""
    return [r for _, r in _checked(records, origin, (*SOURCES, *custom_sources), ground_truth=True)]


def _checked(records: list[dict], origin: str, sources: tuple[str, ...], ground_truth: bool):
    """(row number, amray row) of every record, or the DataError of the first unusable one."""
    if not records:
        raise DataError(f"{origin}: no rows (an empty file or split)")
    seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        where = f"row {number} of {origin}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object with fields, got {type(record).__name__}")
        if "data_source" in record and "reward_model" in record:
            record = from_verl(record, number, where)
        check_row(record, where, sources)
        if ground_truth:
            check_ground_truth(record, where)
        first = seen.setdefault(str(record["id"]), number)
        if first != number:
            raise DataError(f"{where}: id {str(record['id'])!r} is already used by row {first}; ids must be unique")
        yield number, record


def check_row(record: dict, where: str, sources: tuple[str, ...] = SOURCES) -> dict:
    field = "prompt" if "prompt" in record or "messages" not in record else "messages"
    missing = [f"`{name}`" + (" (or `messages`)" if name == "prompt" else "")
               for name in ("id", "source", field) if record.get(name) is None]
    if missing:
        hint = (f"; `source` names the reward: one of {', '.join(sources)} (verl rows carry `data_source` and "
                "`reward_model.ground_truth`)") if record.get("source") is None else ""
        raise DataError(f"{where}: field{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"{'are' if len(missing) > 1 else 'is'} missing{hint}")
    if isinstance(record["id"], bool) or not isinstance(record["id"], (str, int)):
        raise DataError(f"{where}: field `id` must be a string or integer, got {type(record['id']).__name__}")
    if record["source"] not in sources:
        custom = "" if len(sources) > len(SOURCES) else \
            " (a source of your own needs its reward: reward.custom=file.py:fn with reward.custom_source, or Run.add_reward)"
        raise DataError(f"{where}: field `source` is {record['source']!r}; expected one of {', '.join(sources)}{custom}")
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


def check_ground_truth(record: dict, where: str) -> None:
    """The fields the row's reward reads are there, of the type it reads (a custom source: none)."""
    for name, types in GROUND_TRUTH.get(record["source"], ()):
        try:
            require(record, name, types, nonempty=True)
        except RowError as e:
            raise DataError(f"{where}: {e}") from None
    if record["source"] == "code":  # the shape the sandbox runs, checked now rather than scored 0 all run
        from amray.rewards.code import LANGUAGES, TestsError, parse_tests

        if record["language"] not in LANGUAGES:
            raise DataError(f"{where}: field `language` must be one of {', '.join(sorted(LANGUAGES))}, "
                            f"got {record['language']!r}")
        try:
            parse_tests(record["tests"], record["language"])
        except TestsError as e:
            raise DataError(f"{where}: {e}") from None


def chat_rows(records: list[dict], origin: str) -> list[list[dict]]:
    """SFT conversations: each row's `messages` (TRL's conversational rows, verl's multi-turn), or
    its `prompt` + `completion` (TRL's prompt-completion rows, text or message lists) as one exchange."""
    if not records:
        raise DataError(f"{origin}: no rows (an empty file or split)")
    out = []
    for number, record in enumerate(records, start=1):
        where = f"row {number} of {origin}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object with fields, got {type(record).__name__}")
        if "messages" in record:
            messages = record["messages"]
        elif "prompt" in record and "completion" in record:
            messages = [*_turns(record["prompt"], "user"), *_turns(record["completion"], "assistant")]
        else:
            raise DataError(f"{where}: field `messages` is missing (or `prompt` + `completion`)")
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: field `messages` must be a non-empty list of {{role, content}}")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: message {i} needs string `role` and `content`, got {str(m)[:80]!r}")
        out.append(messages)
    return out


def _turns(value: str | list[dict], role: str) -> list[dict]:
    return list(value) if isinstance(value, list) else [{"role": role, "content": value}]


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
