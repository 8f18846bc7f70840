"""Quote -> work -> spend, the SDK's main job, against an in-process fake of the API.

Runs offline with no key: the fake below answers like the documented API over
`httpx.MockTransport`, so the client, its validation, retries and error mapping are
the real ones. (A full offline server, `amaimedia.testing`, is on the way.)

    python examples/quickstart.py
"""

from __future__ import annotations

import json

import httpx

from amaimedia import AmaiClient, InsufficientCreditsError

PRICES = {"chat": 5, "dub": 40}  # tokens per unit in this fake


class FakeLedger:
    """Just enough of the API for the demo: one account, idempotent spends."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.charges: dict[tuple[str, str], dict[str, object]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        cost = round(PRICES[body["tool"]] * body["units"])
        if request.url.path.endswith("/check"):
            return httpx.Response(
                200,
                json={
                    "ok": True,
                    "allowed": cost <= self.balance,
                    "cost_tokens": cost,
                    "balance_after": self.balance - cost,
                },
            )
        key = (body["tool"], body["reference"])
        if key in self.charges:  # the same reference never charges twice
            return httpx.Response(200, json=self.charges[key])
        if cost > self.balance:
            error = {"ok": False, "error": "insufficient_credits", "cost_tokens": cost}
            return httpx.Response(402, json={**error, "balance": self.balance})
        self.balance -= cost
        self.charges[key] = {"ok": True, "charged": cost, "balance_after": self.balance}
        return httpx.Response(200, json=self.charges[key])


def main() -> None:
    ledger = FakeLedger(balance=200)
    http = httpx.Client(transport=httpx.MockTransport(ledger))
    with AmaiClient(api_key="amai_live_demo_not_a_real_key_0000", http_client=http) as client:
        print(f"client: {client!r}")

        quote = client.check("dub", units=3)
        print(f"1. check  dub x3 -> cost {quote.cost_tokens} tokens, allowed={quote.allowed}")

        print("2. work   ... dubbing three minutes of video ...")

        charge = client.spend("dub", units=3)
        print(f"3. spend  dub x3 -> charged {charge.charged}, balance {charge.balance_after}")
        print(f"          reference {charge.reference}")

        again = client.spend("dub", units=3, reference=charge.reference)
        print(f"4. replay same reference -> no new charge, balance still {ledger.balance}")
        assert again == charge

        try:
            client.spend("dub", units=10)
        except InsufficientCreditsError as exc:
            print(f"5. spend  dub x10 -> {type(exc).__name__}: {exc}")
    http.close()
    assert ledger.balance == 80, ledger.balance
    print("round trip complete: one charge, no double charge, a typed error for the rest")


if __name__ == "__main__":
    main()
