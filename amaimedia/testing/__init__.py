"""Test your AMAImedia integration offline: a fake of the API, and a pytest fixture.

`FakeAmaiServer` keeps accounts, balances and a spend ledger in memory and answers like
the API, in process or over loopback HTTP. With pytest, the `amai_fake` fixture (from
the plugin this package installs) gives each test a fresh one:

```python
def test_a_dub_is_charged_once(amai_fake):
    key = amai_fake.create_key(balance=1_000)
    amai_fake.fail_next("spend", drop_after_commit=True)  # charged, answer lost
    with amai_fake.client(key) as client:
        charge = client.spend("dub", units=2)  # the SDK retries with the same reference
    assert charge.charged == 80
    assert amai_fake.balance(key) == 920
    assert len(amai_fake.spends) == 1
```
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._app import RecordedRequest
    from ._ledger import SpendRecord
    from ._server import FakeAmaiServer

__all__ = ["FakeAmaiServer", "RecordedRequest", "SpendRecord"]

# pytest imports this package in every run where the SDK is installed, on the way to the
# plugin (amaimedia.testing.pytest_plugin): the fake, and with it the SDK, httpx and
# pydantic, load when a name of the package is first used, such as by the `amai_fake`
# fixture.
_PUBLIC = {
    "FakeAmaiServer": "._server",
    "RecordedRequest": "._app",
    "SpendRecord": "._ledger",
}


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    found = {n: getattr(importlib.import_module(m, __name__), n) for n, m in _PUBLIC.items()}
    # Tracebacks, reprs and the API reference show the public path.
    for cls in found.values():
        cls.__module__ = __name__
    globals().update(found)
    return found[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


del TYPE_CHECKING
