"""amray: Ray-native GRPO post-training for reasoning LLMs (AM-Thinking-v1 recipe)."""

__version__ = "0.1.0"
