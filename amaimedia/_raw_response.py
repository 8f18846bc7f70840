"""`RawResponse`: a result together with the HTTP answer it came from.

What `client.with_raw_response.check()` and `.spend()` return, for the headers that no
model holds (such as the rate-limit headers the API will send). No I/O happens here: the
answer was read, checked and parsed before the call returned, so both clients share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar

import httpx
from pydantic import BaseModel

from ._response import request_id_of_answer

if TYPE_CHECKING:
    from ._base_client import Answer

__all__ = ["RawResponse"]

_T = TypeVar("_T", bound=BaseModel)


class RawResponse(Generic[_T]):
    """The HTTP answer of a call that succeeded, and the model parsed from it.

    ```python
    raw = client.with_raw_response.check("chat")
    print(raw.status_code, raw.headers.get("cf-ray"))
    quote = raw.parse()
    ```

    Only an answer that succeeded gets here: an error answer raises, after the same
    retries, exactly as `check()` and `spend()` raise. The model was parsed before the
    call returned, so `parse()` does no work and cannot fail.

    A raw response cannot be pickled: its request carries the API key in its
    `Authorization` header. Pickle `parse()` instead.
    """

    __slots__ = ("_answer", "_parsed")

    def __init__(self, answer: Answer, parsed: _T) -> None:
        """Pair an answer, its body read, with the model parsed from it.

        The answer of the async client's direct path becomes an `httpx.Response` when
        `http_response` is first read.
        """
        self._answer = answer
        self._parsed = parsed

    @property
    def http_response(self) -> httpx.Response:
        """The `httpx.Response` itself, its body read (`content`, `text`, `json()`)."""
        answer = self._answer
        return answer if isinstance(answer, httpx.Response) else answer.response()

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers (case-insensitive)."""
        return self._answer.headers

    @property
    def status_code(self) -> int:
        """The answer's HTTP status: a 2xx."""
        return self._answer.status_code

    @property
    def request_id(self) -> str | None:
        """The `cf-ray` or `x-request-id` header, for a support ticket; `None` if absent."""
        return request_id_of_answer(self._answer)

    def parse(self) -> _T:
        """The model of the answer: the `Quote` or `Charge` the plain call returns.

        Its `request_id` is set, as on the plain call's result.
        """
        return self._parsed

    def __repr__(self) -> str:
        # Neither the request (its Authorization header) nor the headers: the status and
        # what the answer was parsed into.
        return f"<RawResponse [{self.status_code}] {type(self._parsed).__name__}>"

    def __reduce__(self) -> NoReturn:
        # The request would carry the API key to wherever the pickle goes.
        raise TypeError(
            "a RawResponse cannot be pickled: its request carries the API key; "
            "pickle raw.parse() instead"
        )
