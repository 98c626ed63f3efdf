"""Category mixing: per-category repetition weights, then rare categories upsampled to a floor.

AM-Thinking-v1 upsamples rare categories by repeating their rows. A weight w repeats every row of
the category floor(w) times and a seeded random (w - floor(w)) share of them once more; w < 1
keeps that share. Repeated rows keep their `id`: they are the same problem, seen more often.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from amray.data.config import MixingConfig


def category_counts(rows: list[dict], field: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r.get(field)) for r in rows).items()))


def mix(rows: list[dict], cfg: MixingConfig) -> list[dict]:
    """Rows repeated per `cfg.weights`, then each category below `cfg.min_fraction` upsampled to it."""
    rng = random.Random(cfg.seed)
    by_category: dict[str, list[dict]] = {}
    for r in rows:
        by_category.setdefault(str(r.get(cfg.category_field)), []).append(r)
    mixed = {c: repeat(rs, cfg.weights.get(c, 1.0), rng) for c, rs in by_category.items()}
    if cfg.min_fraction > 0:
        mixed = _upsample_rare(mixed, by_category, cfg.min_fraction, rng)
    out = [r for c in by_category for r in mixed[c]]
    rng.shuffle(out)
    return out


def repeat(rows: list[dict], weight: float, rng: random.Random) -> list[dict]:
    whole = math.floor(weight)
    extra = rng.sample(rows, round((weight - whole) * len(rows)))
    return rows * whole + extra


def _upsample_rare(mixed: dict[str, list[dict]], original: dict[str, list[dict]], floor: float,
                   rng: random.Random) -> dict[str, list[dict]]:
    """Grow each category under `floor` of the total until it has that share.

    Solving n_c = floor * (total_others + n_c) for every rare category at once, so adding rows to
    one category does not push another back below the floor."""
    if floor * len(mixed) >= 1:
        raise ValueError(f"mixing.min_fraction={floor} is impossible with {len(mixed)} categories")
    sizes = {c: len(rs) for c, rs in mixed.items()}
    rare = {c for c, n in sizes.items() if n < floor * sum(sizes.values())}
    while True:
        others = sum(n for c, n in sizes.items() if c not in rare)
        target = math.ceil(floor * others / (1 - floor * len(rare)))
        newly = {c for c, n in sizes.items() if c not in rare and n < target}
        if not newly:
            break
        rare |= newly
    for c in rare:
        if sizes[c] and target > sizes[c]:
            mixed[c] = repeat(original[c], target / len(original[c]), rng)
    return mixed
