"""Deribit's book level actions, applied: the one rule a client, the simulator and consumers share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def apply_levels(side: dict[float, float], levels: Iterable[list[Any]]) -> None:
    """Apply ``[action, price, amount]`` entries to one side in place: ``new``/``change`` set, ``delete`` removes."""
    for action, price, amount in levels:
        if action == "delete":
            side.pop(price, None)
        else:
            side[price] = amount
