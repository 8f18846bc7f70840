"""The fake's price table, and the exact arithmetic that turns units into tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Final

__all__ = ["DEFAULT_PRICES", "cost_tokens", "merge_prices"]

DEFAULT_PRICES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "chat": 5,
        "image": 20,
        "voice_clone": 2,
        "dub": 40,
        "music": 30,
        "sfx": 10,
        "speech2text": 8,
        "translate": 3,
    }
)


def merge_prices(overrides: Mapping[str, int] | None) -> Mapping[str, int]:
    """The default table with `overrides` laid over it, validated and read-only.

    Raises:
        TypeError: `overrides` is not a mapping of str to int.
        ValueError: A tool name is empty or holds whitespace, or a price is not positive.
    """
    prices = dict(DEFAULT_PRICES)
    if overrides is None:
        return MappingProxyType(prices)
    if not isinstance(overrides, Mapping):
        raise TypeError(f"prices must be a mapping of tool to int, got {type(overrides).__name__}")
    for tool, price in overrides.items():
        if not isinstance(tool, str):
            raise TypeError(f"price table keys must be tool names (str), got {tool!r}")
        if not tool or any(c.isspace() for c in tool):
            raise ValueError(f"tool names must be non-empty, without whitespace, got {tool!r}")
        if isinstance(price, bool) or not isinstance(price, int):
            raise TypeError(f"the price of {tool!r} must be an int, got {type(price).__name__}")
        if price <= 0:
            raise ValueError(f"the price of {tool!r} must be a positive number of tokens")
        prices[tool] = price
    return MappingProxyType(prices)


def cost_tokens(price: int, units: int | float) -> int:
    """`ceil(price * units)`, computed exactly.

    A float is taken at the decimal value it was written as (its `repr`), so that
    `2.5` units at 40 tokens cost exactly 100 and `0.1` units at 30 cost 3, never the
    101 or 4 that binary floating point error would round up to.
    """
    exact = Fraction(units) if isinstance(units, int) else Fraction(repr(units))
    return math.ceil(price * exact)
