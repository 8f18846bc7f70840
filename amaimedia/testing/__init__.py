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

from ._app import RecordedRequest
from ._ledger import SpendRecord
from ._server import FakeAmaiServer

__all__ = ["FakeAmaiServer", "RecordedRequest", "SpendRecord"]

# Tracebacks, reprs and the API reference show the public path.
for _cls in (FakeAmaiServer, RecordedRequest, SpendRecord):
    _cls.__module__ = __name__
del _cls
