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
from amray.prompts import read_jsonl, sft_batch  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__)
    if not cfg.data.sft:
        raise SystemExit("data.sft is not set: give a JSONL of chat rows with `messages`")
    from amray.cluster import init_ray

    t0 = time.time()
    init_ray(cfg)
    model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
    from transformers import AutoTokenizer

    rows = read_jsonl(cfg.data.sft)
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("messages"), list):
            raise SystemExit(f"{cfg.data.sft} row {n}: field `messages` is missing or not a list")
    data = sft_batch(AutoTokenizer.from_pretrained(model_dir), [r["messages"] for r in rows])
    learners = LearnerGroup(model_dir, cfg.trainer, cfg.grpo)
    logger = MetricsLogger(cfg.log, 0, to_dict(cfg))
    s = cfg.sft
    import numpy as np

    steps_per_epoch = max(1, len(data) // s.batch_size)
    learners.configure(s.lr, s.epochs * steps_per_epoch, s.warmup_steps, s.min_lr_ratio)
    rng = np.random.default_rng(cfg.data.shuffle_seed)
    step = 0
    try:
        for epoch in range(s.epochs):
            order = rng.permutation(len(data))
            for k in range(steps_per_epoch):
                m = learners.train_step(data.select(order[k * s.batch_size:(k + 1) * s.batch_size].tolist()), "sft")
                step += 1
                logger.log(step, {"sft/loss": m["loss"], "sft/lr": m["lr"], "sft/epoch": epoch}, advance=False)
        out = Path(cfg.log.output_dir) / "model"
        learners.save(str(out))
    finally:
        logger.close()
        learners.shutdown()
    summary = {"steps": step, "final_loss": m["loss"], "model_out": str(out), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
