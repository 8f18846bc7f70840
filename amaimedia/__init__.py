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
from ._journal import PendingSpend
from ._meter import Meter, MeterState
from ._metered import MeteredBlock
from ._models import Charge, CheckRequest, ErrorBody, Quote, SpendRequest
from ._types import NOT_GIVEN, ErrorCode, NotGiven, TimeoutTypes, ToolName, Units
from ._version import __version__

if TYPE_CHECKING:
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
    "Meter",
    "MeterState",
    "MeteredBlock",
    "NOT_GIVEN",
    "NotGiven",
    "PendingSpend",
    "Quote",
    "RateLimitError",
    "ServerError",
    "SpendFailedError",
    "SpendJournalError",
    "SpendRequest",
    "TimeoutTypes",
    "ToolName",
    "Units",
    "__version__",
]


def __getattr__(name: str) -> object:
    # The aiohttp transport loads when it is first used, not with the package.
    if name == "AiohttpTransport":
        from ._transports._aiohttp import AiohttpTransport

        AiohttpTransport.__module__ = __name__
        globals()[name] = AiohttpTransport
        return AiohttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Tracebacks, reprs and the API reference show the public path (amaimedia.Quote), not the
# private module a class happens to live in.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj, TYPE_CHECKING
