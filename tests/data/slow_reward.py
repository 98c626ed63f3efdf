"""A custom reward that takes its time (0.3 s a row), so tests can catch rows in flight."""

import time


def reward(row: dict, response: str) -> float:
    time.sleep(0.3)
    return float(response[:1].lower() <= "m")
