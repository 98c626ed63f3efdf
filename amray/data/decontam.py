"""Decontamination: training queries that match an evaluation query are dropped.

Three tests, cheapest first: the same text after normalisation, a shared word 13-gram, and a
sentence-embedding cosine above a threshold (rephrased copies). AM-Thinking-v1 decontaminates
against its eval sets by exact and semantic match.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amray.data.config import DecontaminationConfig
from amray.data.records import DataError, read_records
from amray.data.rows import prompt_text

RECHECK_MARGIN = 0.02
"""bfloat16 cosine scores closer than this to the threshold are recomputed in float32."""

QUERY_FIELDS = ("prompt", "problem", "question", "text")
"""Where an eval row keeps its query, in order of preference (`text` is MBPP's)."""
# Instructions that eval harnesses append to the problem; they are not part of the problem.
_SUFFIX = re.compile(r"\s*(?:please|let's|let us)\s+(?:reason|think)\s+step\s+by\s+step\b[^\n]{0,120}$", re.IGNORECASE)
_WORD = re.compile(r"\w+")


@dataclass
class EvalQuery:
    file: str
    row: int
    text: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row}"


def load_eval_queries(paths: list[str | Path]) -> list[EvalQuery]:
    queries = []
    for path in paths:
        for number, record in enumerate(read_records(path), start=1):
            name = next((f for f in QUERY_FIELDS if record.get(f) is not None), None)
            if name is None:
                raise DataError(f"row {number} of {path}: no query field (looked for {', '.join(QUERY_FIELDS)})")
            value = record[name]
            if not isinstance(value, (str, list)):
                raise DataError(f"row {number} of {path}: field `{name}` must be text or a message list")
            queries.append(EvalQuery(Path(path).name, number, prompt_text(value)))
    return queries


def normalize(text: str) -> str:
    return " ".join(_SUFFIX.sub("", text).lower().split())


def ngrams(text: str, n: int) -> set[str]:
    words = _WORD.findall(normalize(text))
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


class Decontaminator:
    """Index of the eval queries; `exact`, `ngram` and `semantic` each name the eval row matched."""

    def __init__(self, evals: list[EvalQuery], cfg: DecontaminationConfig) -> None:
        self.evals = evals
        self.cfg = cfg
        self._exact = {key: e for e in evals if (key := normalize(e.text))}
        self._grams = self._index_ngrams()
        self._embeddings: np.ndarray | None = None
        self._embedder = None

    def exact(self, query: str) -> str | None:
        match = self._exact.get(normalize(query))
        return f"same text as {match}" if match else None

    def ngram(self, query: str) -> str | None:
        for gram in ngrams(query, self.cfg.ngram_size):
            if match := self._grams.get(gram):
                return f"shares the {self.cfg.ngram_size}-gram {gram!r} with {match}"
        return None

    def _index_ngrams(self) -> dict[str, EvalQuery]:
        """n-gram -> eval query, leaving out template text shared by many eval queries.

        A gram found in more than `ngram_boilerplate_docs` queries is template; so is a gram whose
        words are mostly covered by template grams ('... each test case contains n')."""
        n = self.cfg.ngram_size
        words = [_WORD.findall(normalize(e.text)) for e in self.evals]
        owners: dict[str, set[int]] = defaultdict(set)
        for i, ws in enumerate(words):
            for j in range(len(ws) - n + 1):
                owners[" ".join(ws[j:j + n])].add(i)
        template = {g for g, o in owners.items() if len(o) > self.cfg.ngram_boilerplate_docs}
        index: dict[str, EvalQuery] = {}
        for i, ws in enumerate(words):
            grams = [" ".join(ws[j:j + n]) for j in range(len(ws) - n + 1)]
            covered = [False] * len(ws)
            for j, g in enumerate(grams):
                if g in template:
                    covered[j:j + n] = [True] * n
            for j, g in enumerate(grams):
                if g not in template and sum(covered[j:j + n]) * 2 <= n:
                    index.setdefault(g, self.evals[i])
        return index

    def semantic(self, queries: list[str]) -> dict[int, str]:
        """Position of each query whose embedding is within the threshold of an eval query's."""
        from amray.data.embed import Embedder, nearest

        if not queries or not self.evals:
            return {}
        if self._embedder is None:
            self._embedder = Embedder(self.cfg.embedding_model, self.cfg.embedding_batch_size,
                                      self.cfg.embedding_max_tokens, self.cfg.embedding_device,
                                      self.cfg.embedding_dtype)
            self._embeddings = self._eval_embeddings()
        texts = [normalize(q) for q in queries]
        best, score = nearest(self._embedder.encode(texts), self._embeddings)
        if self._embedder.fast:
            # bfloat16 scores are within ~0.005 of float32 ones: redo the near-threshold rows in
            # float32 (each text alone, as the float32 path embeds it), so every decision is the
            # one the float32 path makes, whatever else is in the batch, at about twice the speed.
            near = np.nonzero(np.abs(score - self.cfg.embedding_threshold) < RECHECK_MARGIN)[0]
            if len(near):
                best[near], score[near] = nearest(self._embedder.encode([texts[i] for i in near], exact=True),
                                                  self._embeddings)
        hits = np.nonzero(score >= self.cfg.embedding_threshold)[0]
        return {int(i): f"cosine {score[i]:.3f} with {self.evals[best[i]]}" for i in hits}

    def _eval_embeddings(self) -> np.ndarray:
        """Embeddings of the eval queries, from the cache when these texts were embedded before."""
        texts = [normalize(e.text) for e in self.evals]
        key = hashlib.sha256(json.dumps(["unbatched", str(self._embedder.path), self.cfg.embedding_max_tokens, texts]).encode())
        cache = Path(self.cfg.embedding_cache_dir) / f"{key.hexdigest()[:32]}.npy" if self.cfg.embedding_cache_dir else None
        if cache is not None and cache.is_file():
            return np.load(cache)
        vectors = self._embedder.encode(texts, exact=True)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, vectors)
        return vectors
