"""Exact and near-duplicate queries: the first occurrence is kept, later ones name it.

Near duplicates are found with MinHash LSH (datasketch): each query becomes a set of token
shingles, LSH proposes candidates above the Jaccard threshold, and the MinHash estimate confirms.
"""

from __future__ import annotations

import re

from amray.data.config import NearDuplicateConfig

_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    """Lower case, white space collapsed: the key of exact deduplication."""
    return " ".join(text.lower().split())


def exact_duplicates(queries: list[str]) -> dict[int, int]:
    """Position of each duplicate -> position of the first query it repeats."""
    first: dict[str, int] = {}
    found: dict[int, int] = {}
    for i, q in enumerate(queries):
        j = first.setdefault(normalize(q), i)
        if j != i:
            found[i] = j
    return found


def shingles(text: str, size: int) -> set[bytes]:
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) <= size:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i:i + size]).encode() for i in range(len(tokens) - size + 1)}


def near_duplicates(queries: list[str], cfg: NearDuplicateConfig) -> dict[int, tuple[int, float]]:
    """Position of each near duplicate -> (position of the earlier query, estimated Jaccard)."""
    from datasketch import MinHash, MinHashLSH

    hashes = MinHash.bulk([list(shingles(q, cfg.shingle_tokens)) for q in queries], num_perm=cfg.num_perm)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    found: dict[int, tuple[int, float]] = {}
    for i, h in enumerate(hashes):
        # LSH candidates are probable, not certain: keep the best one whose estimate clears the bar.
        scored = [(h.jaccard(hashes[j]), j) for j in lsh.query(h)]
        best = max(scored, key=lambda s: (s[0], -s[1]), default=None)
        if best is not None and best[0] >= cfg.threshold:
            found[i] = (best[1], best[0])
        else:
            lsh.insert(i, h)
    return found
