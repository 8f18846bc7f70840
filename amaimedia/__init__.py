"""The official Python SDK for the AMAImedia Developer API.

```python
from amaimedia import AmaiClient

with AmaiClient() as client:  # the key comes from AMAI_API_KEY
    quote = client.check("dub", units=3)
    if quote.allowed:
        ...  # do the work
        charge = client.spend("dub", units=3)
```
"""

from typing import TYPE_CHECKING

from ._async_client import AsyncAmaiClient
from ._async_metered import AsyncMeteredBlock
from ._client import AmaiClient
from ._exceptions import (
    AmaiError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    ForbiddenError,
    InsufficientCreditsError,
    RateLimitError,
    ServerError,
    SpendFailedError,
    SpendJournalError,
)
from ._journal import JournalEntry, PendingSpend, SpendJournal
from ._journal._replay import ReplayReport
from ._meter import Meter, MeterState
from ._metered import MeteredBlock
from ._models import Charge, CheckRequest, ErrorBody, Quote, SpendRequest
from ._types import NOT_GIVEN, ErrorCode, NotGiven, TimeoutTypes, ToolName, Units
from ._version import __version__

if TYPE_CHECKING:
    from ._journal._postgres import PostgresSpendJournal
    from ._journal._sqlite import SQLiteSpendJournal
    from ._transports._aiohttp import AiohttpTransport

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APITimeoutError",
    "AiohttpTransport",
    "AmaiClient",
    "AmaiError",
    "AsyncAmaiClient",
    "AsyncMeteredBlock",
    "AuthenticationError",
    "Charge",
    "CheckRequest",
    "ErrorBody",
    "ErrorCode",
    "ForbiddenError",
    "InsufficientCreditsError",
    "JournalEntry",
    "Meter",
    "MeterState",
    "MeteredBlock",
    "NOT_GIVEN",
    "NotGiven",
    "PendingSpend",
    "PostgresSpendJournal",
    "Quote",
    "RateLimitError",
    "ReplayReport",
    "SQLiteSpendJournal",
    "ServerError",
    "SpendFailedError",
    "SpendJournal",
    "SpendJournalError",
    "SpendRequest",
    "TimeoutTypes",
    "ToolName",
    "Units",
    "__version__",
]


# Loaded when first used, not with the package: what needs aiohttp, psycopg or sqlite3.
_LAZY = {
    "AiohttpTransport": "._transports._aiohttp",
    "PostgresSpendJournal": "._journal._postgres",
    "SQLiteSpendJournal": "._journal._sqlite",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value: type = getattr(importlib.import_module(module, __name__), name)
    value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Tracebacks, reprs and the API reference show the public path (amaimedia.Quote), not the
# private module a class happens to live in.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj, TYPE_CHECKING
