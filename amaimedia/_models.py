"""Pydantic models for what is sent to the API and what comes back.

Requests are models too: `CheckRequest` and `SpendRequest` are where arguments are
validated, once, for both clients.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._constants import MAX_REFERENCE_LENGTH
from ._html import html_table
from ._types import Units

__all__ = [
    "Charge",
    "CheckRequest",
    "ErrorBody",
    "Quote",
    "SpendRequest",
    "build_models",
    "models_built",
]

_M = TypeVar("_M", bound=BaseModel)

# Error types raised by the argument validators; a failure of one of these is a TypeError
# for the caller, any other failure a ValueError.
_TYPE_ERRORS = frozenset({"tool_type", "units_type", "reference_type"})


def _validate_tool(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "tool_type", "tool must be a str such as 'chat', got {kind}", {"kind": _kind(value)}
        )
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise PydanticCustomError(
            "tool_value",
            "tool must be a non-empty name without whitespace, such as 'chat', got {value}",
            {"value": repr(value[:80])},
        )
    return value


def _validate_units(value: object) -> Units:
    # bool is an int subclass, and True would quietly mean "1 unit": refuse it.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "units_type",
            "units must be a positive, finite int or float, got {kind}",
            {"kind": _kind(value)},
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        raise PydanticCustomError(
            "units_value",
            "units is beyond the range of a float: an int of {bits} bits",
            {"bits": int(value).bit_length()},
        ) from None
    if not finite or value <= 0:
        raise PydanticCustomError(
            "units_value",
            "units must be a positive, finite int or float, got {value}",
            {"value": repr(value)},
        )
    return value


def _validate_reference(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "reference_type", "reference must be a str, got {kind}", {"kind": _kind(value)}
        )
    if not value.strip():
        raise PydanticCustomError("reference_value", "reference must not be empty or blank", {})
    if len(value) > MAX_REFERENCE_LENGTH:
        raise PydanticCustomError(
            "reference_value",
            "reference must be at most {limit} characters, got {length}",
            {"limit": MAX_REFERENCE_LENGTH, "length": len(value)},
        )
    if not value.isprintable():
        raise PydanticCustomError(
            "reference_value", "reference must not contain control characters", {}
        )
    return value


def _kind(value: object) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r:.80}"


ToolField = Annotated[str, PlainValidator(_validate_tool)]
UnitsField = Annotated[Units, PlainValidator(_validate_units)]
ReferenceField = Annotated[str, PlainValidator(_validate_reference)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    @classmethod
    def from_arguments(cls: type[_M], **arguments: object) -> _M:
        """Validate a client method's arguments into a request.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: An argument has the right type but an impossible value.
        """
        try:
            return cls.model_validate(arguments)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            error: type[Exception] = TypeError if first["type"] in _TYPE_ERRORS else ValueError
            # "from None": the pydantic chain would only repeat the message.
            raise error(first["msg"]) from None


class CheckRequest(_Request):
    """The body of `POST /api/v1/tools/check`.

    Attributes:
        tool: The tool to quote, such as `"chat"` or `"dub"`.
        units: The amount of work, a positive finite number (a dub unit is a minute).
    """

    tool: ToolField
    units: UnitsField = 1


class SpendRequest(_Request):
    """The body of `POST /api/v1/tools/spend`.

    Attributes:
        tool: The tool that did the work.
        units: The amount of work done.
        reference: The idempotency key: the same `(tool, reference)` never charges twice.
    """

    tool: ToolField
    units: UnitsField = 1
    reference: ReferenceField


class _Response(BaseModel):
    # Frozen so a result can be shared and cached; extra fields are kept because the API
    # may add some before the SDK knows them.
    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)

    def _repr_html_(self) -> str:
        """Every field, extra ones included, as a small HTML table for notebooks."""
        return html_table(type(self).__name__, self)


class _Answer(_Response):
    """An answer of the API to a call that succeeded, and the request id it came with."""

    # Metadata of the HTTP answer, not of the result: a private attribute, so that it is
    # in no dump, JSON or schema, and __eq__ below leaves it out of equality.
    _request_id: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _request_id_from_context(self, info: ValidationInfo) -> Any:
        if info.context:
            request_id = info.context.get("request_id")
            private = self.__pydantic_private__
            if private is None:  # not made yet (older pydantic): through its __setattr__
                self._request_id = request_id
            else:  # straight into the store: BaseModel.__setattr__ costs microseconds
                private["_request_id"] = request_id
        return self

    @property
    def request_id(self) -> str | None:
        """The `cf-ray` or `x-request-id` header of the answer, as errors carry it.

        `None` for a model built by hand, or an answer without either header.
        """
        # Read straight from pydantic's private store: `self._request_id` goes through
        # BaseModel.__getattr__, about 5 µs, and a charge's request id is read per call.
        private = self.__pydantic_private__
        return None if private is None else private.get("_request_id")

    def __eq__(self, other: object) -> bool:
        # pydantic's __eq__ compares private attributes too: the same charge read from two
        # answers (a replayed reference) must be equal whatever its request id.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )

    # Defining __eq__ would otherwise leave the frozen models unhashable; pydantic's
    # hash, of the fields alone, is what equality needs.
    __hash__ = _Response.__hash__


class Quote(_Answer):
    """The answer of `check`: what the work would cost, and whether the balance covers it.

    `request_id` is the answer's `cf-ray` or `x-request-id` header, for a support
    ticket: a read-only property, not a field. It is left out of equality, hashing,
    `model_dump()`, `model_dump_json()` and the JSON schema, so comparisons and
    serialized answers do not change with it; `model_copy()` and pickling keep it, and a
    model built by hand has `None`.

    Attributes:
        ok: `True` for every answer the API gives without an error.
        allowed: Whether the balance covers the cost.
        cost_tokens: What the work would cost, in tokens.
        balance_after: The balance left after paying that cost, in tokens.
        request_id: The answer's request id (see above), or `None`.
    """

    ok: bool
    allowed: bool
    cost_tokens: int
    balance_after: int


class Charge(_Answer):
    """The answer of `spend`: what was charged.

    `request_id` is the answer's `cf-ray` or `x-request-id` header, for a support
    ticket: a read-only property, not a field, kept out of equality, hashing,
    `model_dump()`, `model_dump_json()` and the JSON schema; `model_copy()` and pickling
    keep it, and a model built by hand has `None`.

    Attributes:
        ok: `True` for every answer the API gives without an error.
        charged: The tokens charged (a replayed reference reports the original charge).
        balance_after: The balance after the charge, in tokens.
        reference: The idempotency key that was sent. The server does not echo it; the
            SDK fills it in so that it can be logged and replayed.
        request_id: The answer's request id (see above), or `None`.
    """

    ok: bool
    charged: int
    balance_after: int
    reference: str

    @model_validator(mode="before")
    @classmethod
    def _reference_from_context(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and "reference" in info.context:
            return {**data, "reference": info.context["reference"]}
        return data


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


_Lenient = WrapValidator(_none_if_invalid)


class ErrorBody(_Response):
    """The body of an error answer: `{"ok": false, "error": "<stable string>", ...}`.

    Parsing is lenient: a field of an unexpected type reads as `None` rather than hiding
    the error that the status code already reports.

    Attributes:
        ok: `False` for an error.
        error: The stable error string, such as `"insufficient_credits"`.
        message: A human-readable explanation, if the server sent one.
        cost_tokens: With `insufficient_credits`: what the call would have cost.
        balance: With `insufficient_credits`: the balance at the time.
    """

    ok: Annotated[bool | None, _Lenient] = False
    error: Annotated[str | None, _Lenient] = None
    message: Annotated[str | None, _Lenient] = None
    cost_tokens: Annotated[int | None, _Lenient] = None
    balance: Annotated[int | None, _Lenient] = None


# The models are built on first use, not at import (`defer_build`): that keeps
# `import amaimedia` lean, but the first call pays for it, tens of milliseconds.
_built = False
_build_lock = threading.Lock()


def build_models() -> None:
    """Build every model's validator now: the async client does it off its event loop."""
    global _built
    with _build_lock:
        if not _built:
            for model in (CheckRequest, SpendRequest, Quote, Charge, ErrorBody):
                model.model_rebuild()
            _built = True


def _renew_build_lock() -> None:  # pragma: no cover - runs in a forked child
    # A thread of the parent building the models at the fork would hold it for ever here.
    global _build_lock
    _build_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system
    os.register_at_fork(after_in_child=_renew_build_lock)


def models_built() -> bool:
    """Whether `build_models()` has run, so that no call builds a validator any more."""
    return _built


# Returned to callers who may not have used a name of the package: the public path is set
# here, as amaimedia/__init__.py sets it for what it loads (reprs and pickles say
# `amaimedia.Quote`). The fields' annotations are resolved already, at class creation.
for _model in (Charge, CheckRequest, ErrorBody, Quote, SpendRequest):
    _model.__module__ = "amaimedia"
del _model
