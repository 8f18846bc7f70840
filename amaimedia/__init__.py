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

from ._version import __version__

if TYPE_CHECKING:
    from ._async_client import AsyncAmaiClient
    from ._async_metered import AsyncMeteredBlock
    from ._client import AmaiClient
    from ._events import ChargeEvent, Hooks, RequestEvent, ResponseEvent, RetryEvent
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
    from ._journal import JournalEntry, PendingSpend, RefusedSpend, SpendJournal
    from ._journal._postgres import PostgresSpendJournal
    from ._journal._replay import ReplayReport
    from ._journal._sqlite import SQLiteSpendJournal
    from ._meter import Meter, MeterState
    from ._metered import MeteredBlock
    from ._models import Charge, CheckRequest, ErrorBody, Quote, SpendRequest
    from ._raw_response import RawResponse
    from ._transports._aiohttp import AiohttpTransport
    from ._types import NOT_GIVEN, ErrorCode, NotGiven, TimeoutTypes, ToolName, Units

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
    "ChargeEvent",
    "CheckRequest",
    "ErrorBody",
    "ErrorCode",
    "ForbiddenError",
    "Hooks",
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
    "RawResponse",
    "RefusedSpend",
    "ReplayReport",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
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


# Nothing but the version loads with the package: pytest imports the SDK's plugin
# (amaimedia.testing.pytest_plugin, and so this package) in every run of every project that
# installs the SDK, and a run that does not use the `amai_fake` fixture should not pay for
# the clients, httpx and pydantic. The first public name used loads them all at once, so
# that from then on the package is what it would be if it had imported them.
_SDK = {
    "AsyncAmaiClient": "._async_client",
    "AsyncMeteredBlock": "._async_metered",
    "AmaiClient": "._client",
    **dict.fromkeys(
        [
            "AmaiError",
            "APIConnectionError",
            "APIError",
            "APIResponseValidationError",
            "APITimeoutError",
            "AuthenticationError",
            "ForbiddenError",
            "InsufficientCreditsError",
            "RateLimitError",
            "ServerError",
            "SpendFailedError",
            "SpendJournalError",
        ],
        "._exceptions",
    ),
    **dict.fromkeys(
        ["ChargeEvent", "Hooks", "RequestEvent", "ResponseEvent", "RetryEvent"], "._events"
    ),
    **dict.fromkeys(["JournalEntry", "PendingSpend", "RefusedSpend", "SpendJournal"], "._journal"),
    "ReplayReport": "._journal._replay",
    **dict.fromkeys(["Meter", "MeterState"], "._meter"),
    "MeteredBlock": "._metered",
    **dict.fromkeys(["Charge", "CheckRequest", "ErrorBody", "Quote", "SpendRequest"], "._models"),
    "RawResponse": "._raw_response",
    **dict.fromkeys(
        ["NOT_GIVEN", "ErrorCode", "NotGiven", "TimeoutTypes", "ToolName", "Units"], "._types"
    ),
}

# Loaded when first used, not with the SDK: what needs aiohttp, psycopg or sqlite3.
_LAZY = {
    "AiohttpTransport": "._transports._aiohttp",
    "PostgresSpendJournal": "._journal._postgres",
    "SQLiteSpendJournal": "._journal._sqlite",
}


def _load_sdk() -> None:
    import importlib

    modules = {module: importlib.import_module(module, __name__) for module in _SDK.values()}
    found = {name: getattr(modules[module], name) for name, module in _SDK.items()}
    # Tracebacks, reprs and the API reference show the public path (amaimedia.Quote), not
    # the private module a class happens to live in.
    for obj in found.values():
        if isinstance(obj, type):
            obj.__module__ = __name__
    globals().update(found)


def __getattr__(name: str) -> object:
    if name not in _SDK and name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "AmaiClient" not in globals():
        _load_sdk()
    if name in _SDK:
        return globals()[name]
    import importlib

    module = _LAZY[name]

    value: type = getattr(importlib.import_module(module, __name__), name)
    value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


del TYPE_CHECKING
