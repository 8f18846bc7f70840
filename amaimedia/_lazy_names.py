"""The names every call uses, imported once, by the first call, and then read as globals.

`import amaimedia` and building a client leave the models (pydantic's model machinery),
the answer parsing and the error mapping unloaded (see `tests/docs/test_import.py`). The
calls need them: an import statement in each function that uses one would look the module
up again on every call, which costs about a microsecond each, a dozen times a call. So
the clients call `bind()` once, with the first call (`_base_client.build_models()`), and
read the names here as attributes of this module from then on.

Only the names below are bound here; reading one before `bind()` raises AttributeError.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._answer import bound_answer
    from ._exceptions import AmaiError
    from ._models import Charge, CheckRequest, Quote, SpendRequest
    from ._observer import CallInfo
    from ._references import new_reference
    from ._response import connection_error, dead_loop_error, parse_response, parse_success

__all__ = [
    "AmaiError",
    "CallInfo",
    "Charge",
    "CheckRequest",
    "Quote",
    "SpendRequest",
    "bind",
    "bound",
    "bound_answer",
    "connection_error",
    "dead_loop_error",
    "new_reference",
    "parse_response",
    "parse_success",
]

# Whether `bind()` has run in this process (a forked child keeps what its parent bound).
bound = False
_lock = threading.Lock()


def bind() -> None:
    """Import the modules of the names above, build the models, and bind the names.

    The async client runs this off its event loop: building the models' validators takes
    pydantic a few milliseconds.
    """
    global bound
    with _lock:
        if bound:
            return
        from . import _answer, _exceptions, _models, _observer, _references, _response

        _models.build_models()
        globals().update(
            AmaiError=_exceptions.AmaiError,
            CallInfo=_observer.CallInfo,
            Charge=_models.Charge,
            CheckRequest=_models.CheckRequest,
            Quote=_models.Quote,
            SpendRequest=_models.SpendRequest,
            bound_answer=_answer.bound_answer,
            connection_error=_response.connection_error,
            dead_loop_error=_response.dead_loop_error,
            new_reference=_references.new_reference,
            parse_response=_response.parse_response,
            parse_success=_response.parse_success,
        )
        bound = True


def _renew_lock() -> None:  # pragma: no cover - runs in a forked child
    # A thread of the parent binding at the fork would hold it for ever in the child.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_renew_lock)
