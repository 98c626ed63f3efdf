"""IFEval strict reward: real IFEval rows, followed and broken instructions, offline punkt."""

from __future__ import annotations

import json

import pytest

from amray.rewards import score_row
from amray.rewards.ifeval import check_instructions

from evaldata_path import EVALDATA  # noqa: E402
IFEVAL = EVALDATA / "ifeval_input_data.jsonl"
ESSAY = ("The river moved slowly through the valley. Farmers watched the water rise in spring. "
         "Children played near the banks every summer. The town grew around the old stone bridge.")


def ifeval_row(response: str, ids: list[str], kwargs: list[dict], prompt: str = "Write something.") -> dict:
    return {"id": "if", "source": "ifeval", "response": response, "prompt": prompt,
            "instruction_id_list": ids, "kwargs": kwargs}


@pytest.mark.parametrize("instruction, kwargs, good, bad", [
    ("punctuation:no_comma", {}, ESSAY, ESSAY.replace("slowly", "slowly, calmly,")),
    ("change_case:english_lowercase", {}, ESSAY.lower(), ESSAY),
    ("change_case:english_capital", {}, ESSAY.upper(), ESSAY),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 5}, ESSAY, ESSAY + " " + ESSAY),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 20}, ESSAY, "Too short."),
    ("keywords:existence", {"keywords": ["bridge", "river"]}, ESSAY, ESSAY.replace("bridge", "tower")),
    ("keywords:forbidden_words", {"forbidden_words": ["castle"]}, ESSAY, ESSAY + " A castle stood there."),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "a: 1"),
    ("detectable_format:title", {}, "<<River Days>>\n" + ESSAY, ESSAY),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, ESSAY + "\nP.S. see you", ESSAY),
    ("startend:quotation", {}, f'"{ESSAY}"', ESSAY),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     ESSAY + " Is there anything else I can help with?", ESSAY),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* one\n* two\n* three"),
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 3},
     "THE RIVER MOVED and then it stopped.", ESSAY),
    ("language:response_language", {"language": "en"}, ESSAY,
     "Le fleuve coulait lentement dans la vallée et les enfants jouaient près du vieux pont de pierre."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write something."}, "Write something. " + ESSAY, ESSAY),
])
def test_followed_and_broken_instructions(instruction: str, kwargs: dict, good: str, bad: str) -> None:
    followed = score_row(ifeval_row(good, [instruction], [kwargs]))
    assert followed.reward == 1.0, followed.info
    assert followed.info["instructions"] == [{"instruction_id": instruction, "followed": True}]
    broken = score_row(ifeval_row(bad, [instruction], [kwargs]))
    assert broken.reward == 0.0 and "error" not in broken.info, broken.info


def test_strict_means_every_instruction() -> None:
    ids = ["punctuation:no_comma", "keywords:existence"]
    kwargs = [{}, {"keywords": ["castle"]}]
    result = score_row(ifeval_row(ESSAY, ids, kwargs))
    assert result.reward == 0.0
    assert [r["followed"] for r in result.info["instructions"]] == [True, False]


@pytest.mark.skipif(not IFEVAL.exists(), reason="shared evaldata not present")
def test_every_real_ifeval_row_is_scorable_offline() -> None:
    import nltk

    with pytest.raises(LookupError):  # no downloaded punkt on this machine: the package model is used
        nltk.data.find("tokenizers/punkt_tab/english/")
    rows = [json.loads(line) for line in IFEVAL.read_text().splitlines()]
    ids = {i for row in rows for i in row["instruction_id_list"]}
    assert len(ids) == 25  # every IFEval instruction type occurs
    for row in rows:
        result = check_instructions(ESSAY + "\n\n" + ESSAY.upper(), row["instruction_id_list"], row["kwargs"], row["prompt"])
        assert "error" not in result.info, (row["key"], result.info)
        assert len(result.info["instructions"]) == len(row["instruction_id_list"])


@pytest.mark.parametrize("row, error", [
    (ifeval_row(ESSAY, ["punctuation:no_semicolons"], [{}]), "unknown IFEval instruction id"),
    (ifeval_row(ESSAY, ["punctuation:no_comma"], []), "`kwargs` has 0 entries for 1 instructions"),
    (ifeval_row(ESSAY, [], []), "must be a non-empty list"),
    ({"id": 1, "source": "ifeval", "response": ESSAY, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
     "field `prompt` is missing"),
])
def test_bad_ifeval_rows_are_reported(row: dict, error: str) -> None:
    result = score_row(row)
    assert result.reward == 0.0 and error in result.info["error"]
