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
    from ._async_client import AsyncAmaiClient, AsyncRawResponseClient
    from ._async_metered import AsyncMeteredBlock
    from ._client import AmaiClient, RawResponseClient
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
    "AsyncRawResponseClient",
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
    "RawResponseClient",
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
# the clients, httpx and pydantic. A public name loads its own module when it is first used,
# and that module what it needs: `from amaimedia import AmaiClient` loads the sync client,
# not the async one, the metered blocks, the journal or pydantic's model machinery, which
# load with the first call or the first model used (docs/performance.md, "Import time").
_PUBLIC = {
    "AiohttpTransport": "._transports._aiohttp",
    **dict.fromkeys(["AsyncAmaiClient", "AsyncRawResponseClient"], "._async_client"),
    "AsyncMeteredBlock": "._async_metered",
    **dict.fromkeys(["AmaiClient", "RawResponseClient"], "._client"),
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
    "PostgresSpendJournal": "._journal._postgres",
    "ReplayReport": "._journal._replay",
    "SQLiteSpendJournal": "._journal._sqlite",
    **dict.fromkeys(["Meter", "MeterState"], "._meter"),
    "MeteredBlock": "._metered",
    **dict.fromkeys(["Charge", "CheckRequest", "ErrorBody", "Quote", "SpendRequest"], "._models"),
    "RawResponse": "._raw_response",
    **dict.fromkeys(
        ["NOT_GIVEN", "ErrorCode", "NotGiven", "TimeoutTypes", "ToolName", "Units"], "._types"
    ),
}


def __getattr__(name: str) -> object:
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(module_name, __name__)
    # Every public name of the module at once, and its classes under the public path, so
    # that tracebacks, reprs and the API reference show amaimedia.Meter, not the private
    # module a class happens to live in. The modules whose classes reach a caller before
    # any name of the package is used (errors, models, NotGiven) do this themselves.
    found = {n: getattr(module, n) for n, m in _PUBLIC.items() if m == module_name}
    for value in found.values():
        if isinstance(value, type):
            value.__module__ = __name__
    globals().update(found)
    return found[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


del TYPE_CHECKING
