"""SFT warm start: chat-formatted loss on assistant tokens only, on the FSDP2 learner.

    python jobs/sft.py --config configs/smollm2_cpu.yaml data.sft=chats.jsonl sft.epochs=2

`data.sft`: JSONL rows with `messages` ([{"role", "content"}, ...]). Saves OUTPUT_DIR/model,
which `jobs/grpo.py model.path=OUTPUT_DIR/model` starts from.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray.config import parse_cli, to_dict  # noqa: E402
from amray.learner import LearnerGroup  # noqa: E402
from amray.metrics import MetricsLogger  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.data.records import DataError, read_records  # noqa: E402
from amray.sft import sft_batch, sft_epochs  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__)
    if not cfg.data.sft:
        raise SystemExit("data.sft is not set: give a JSONL of chat rows with `messages`")
    from amray.cluster import init_ray

    t0 = time.time()
    init_ray(cfg)
    model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
    from transformers import AutoTokenizer

    try:
        rows = read_records(cfg.data.sft)
    except DataError as e:
        raise SystemExit(f"error: {e}") from e
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("messages"), list):
            raise SystemExit(f"{cfg.data.sft} row {n}: field `messages` is missing or not a list")
    data = sft_batch(AutoTokenizer.from_pretrained(model_dir), [r["messages"] for r in rows])
    learners = LearnerGroup(model_dir, cfg.trainer)
    logger = MetricsLogger(cfg.log, 0, to_dict(cfg))
    try:
        losses = sft_epochs(cfg, learners, data, logger)
        out = Path(cfg.log.output_dir) / "model"
        learners.save(str(out))
    finally:
        logger.close()
        learners.shutdown()
    summary = {"steps": len(losses), "final_loss": losses[-1], "model_out": str(out), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
