"""A custom reward for the learning tests: 1 when the response starts with a letter a-m (either
case). A random-init model does this ~20% of the time, so GRPO has room to make it more likely."""


def reward(row: dict, response: str) -> tuple[float, dict]:
    first = response[:1].lower()
    return float("a" <= first <= "m"), {"first": response[:1]}
