"""Quote -> work -> spend: the SDK's main job, in one metered block.

With no `AMAI_API_KEY` in the environment, this starts the SDK's offline AMAImedia
server (`amaimedia.testing.FakeAmaiServer`) on 127.0.0.1 and talks to it over real HTTP,
with a throwaway key: nothing leaves the machine. With `AMAI_API_KEY` set, it talks to
production and spends one `chat` unit (5 tokens).

    python examples/quickstart.py
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from amaimedia import AmaiClient, InsufficientCreditsError


def dub(minutes: float) -> str:
    """Stand-in for the real work: a dub of `minutes` of video."""
    time.sleep(0.05)
    return f"dubbed-{minutes}min.mp4"


def round_trip(client: AmaiClient, tool: str, units: float) -> None:
    quote = client.check(tool, units)
    print(f"1. check   {tool} x{units}: costs {quote.cost_tokens} tokens, allowed={quote.allowed}")

    with client.metered(tool, units=units) as meter:
        result = dub(units)
        print(f"2. work    {result} (reference {meter.reference}, nothing charged yet)")
    charge = meter.charge
    assert charge is not None
    print(f"3. spend   charged {charge.charged} tokens, balance now {charge.balance_after}")

    again = client.spend(tool, units, reference=meter.reference)
    print(
        f"4. replay  the same reference again: charged {again.charged} as before, "
        f"balance still {again.balance_after}"
    )


def offline_tour(client: AmaiClient) -> None:
    round_trip(client, "dub", 3)
    try:
        with client.metered("dub", units=10):
            print("never printed: the block does not run without funds")
    except InsufficientCreditsError as exc:
        print(f"5. too big InsufficientCreditsError: {exc}")


@contextlib.contextmanager
def offline_server(balance: int) -> Iterator[tuple[str, str]]:
    from amaimedia.testing import FakeAmaiServer

    fake = FakeAmaiServer()
    key = fake.create_key(balance=balance)
    with fake.serve() as base_url:
        yield base_url, key
    rows = fake.spends
    print(
        f"ledger    {len(rows)} charge(s) recorded by the offline server, "
        f"balance {fake.balance(key)} of {balance}"
    )


def main() -> None:
    if os.environ.get("AMAI_API_KEY"):
        with AmaiClient() as client:
            print(f"production: {client.base_url}")
            round_trip(client, "chat", 1)
        return
    with offline_server(balance=200) as (base_url, key):
        print(f"offline AMAImedia server at {base_url} (no key needed, nothing leaves here)")
        with AmaiClient(api_key=key, base_url=base_url) as client:
            offline_tour(client)


if __name__ == "__main__":
    main()
