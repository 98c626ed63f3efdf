"""amray: Ray-native GRPO post-training for reasoning LLMs (AM-Thinking-v1 recipe).

    import amray
    with amray.Run("configs/demo_cpu.yaml", output_dir="runs/nb", train="train.jsonl") as run:
        step = run.step()

`import amray` stays light (no torch, vLLM or Ray): the API is imported on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Run", "StepResult", "StepSample", "SFTResult", "make_config"]


def __getattr__(name: str) -> object:
    if name in ("Run", "make_config"):
        from amray import api

        return getattr(api, name)
    if name in ("StepResult", "StepSample", "SFTResult"):
        from amray import results

        return getattr(results, name)
    raise AttributeError(f"module 'amray' has no attribute {name!r}")
