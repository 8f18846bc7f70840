"""The faults the reliability suites inject, seeded plans of them, and the expected outcome.

A `BlockPlan` is one metered block: its tool and units, what its body does, and the faults
queued for its check and its spend, in order, one per attempt. `expect()` applies the
SDK's documented retry rules to a plan, so a lane that runs the block alone on its own
`FakeAmaiServer` can compare what happened with what had to happen.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, Literal

from amaimedia import (
    AmaiError,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    InsufficientCreditsError,
    RateLimitError,
    ServerError,
)
from amaimedia.testing import FakeAmaiServer

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_RETRIES",
    "MAX_RETRY_AFTER",
    "SEED",
    "SLOW",
    "TIMEOUT",
    "BlockPlan",
    "Body",
    "Expected",
    "Fault",
    "FAULT_KINDS",
    "cost",
    "expect",
    "expected_seen",
    "make_plans",
    "queue_faults",
    "random_fault",
]

# Read once, when the module is imported: the suite's autouse fixture clears AMAI_*
# variables before each test runs.
SEED: Final = int(os.environ.get("AMAI_FAULT_SEED", "20260703"))

MAX_RETRIES: Final = 2
MAX_ATTEMPTS: Final = MAX_RETRIES + 1
# Short, so that a slow answer costs a lane little; SLOW is far above it, so that a slow
# answer is never in time, however loaded the machine.
TIMEOUT: Final = 0.3
SLOW: Final = 1.5
# A Retry-After above this is raised at once rather than waited for.
MAX_RETRY_AFTER: Final = 1.0

_HTML: Final = b"<html><head><title>502 Bad Gateway</title></head><body>upstream</body></html>"
# 200 answers that are no Quote and no Charge: not JSON, or JSON of the wrong shape.
_GARBAGE: Final = (
    b"not json at all",
    b"\xff\xfe\x00garbage\x80",
    b'{"ok": true}',
    b"[1, 2, 3]",
    b'{"ok": true, "allowed": "maybe", "charged": "lots"}',
    b"",
    b"<html>200 OK, but a captive portal</html>",
)

Body = Literal["complete", "raise", "skip", "task_cancelled"]
"""What a block's body does: finish, raise on purpose, `meter.cancel()`, or have its task
cancelled mid-work (async only)."""

Outcome = Literal["charged", "raised", "skipped", "check_failed", "spend_failed"]


@dataclass(frozen=True)
class Fault:
    """One fault for one attempt, and everything the SDK's rules say about it.

    Attributes:
        kind: The name counted in the soak's summary.
        options: The arguments of `FakeAmaiServer.fail_next`.
        seen: What the client's transport sees: `"status 503"`, `"cut"` or `"timeout"`.
        error: The exact class of `AmaiError` the attempt fails with.
        retried: Whether the SDK tries again after it.
        commits: Whether a spend was charged before the attempt failed.
    """

    kind: str
    options: Mapping[str, Any] = field(repr=False)
    seen: str
    error: type[AmaiError]
    retried: bool
    commits: bool = False


def random_fault(rng: random.Random) -> Fault:
    """One fault, drawn with the soak's weights."""
    kind = rng.choices(_KINDS, weights=_WEIGHTS)[0]
    if kind == "429":
        return Fault(kind, {"status": 429}, "status 429", RateLimitError, retried=True)
    if kind == "429 Retry-After":
        options: dict[str, Any] = {"status": 429, "retry_after": rng.choice([0, 0.01, 0.02])}
        return Fault(kind, options, "status 429", RateLimitError, retried=True)
    if kind == "429 Retry-After too long":
        options = {"status": 429, "retry_after": rng.choice([120, 3600])}
        return Fault(kind, options, "status 429", RateLimitError, retried=False)
    if kind == "5xx JSON":
        status = rng.choice([500, 502, 503])
        return Fault(kind, {"status": status}, f"status {status}", ServerError, retried=True)
    if kind == "5xx HTML":
        status = rng.choice([500, 502, 503])
        options = {"status": status, "body": _HTML, "content_type": "text/html"}
        return Fault(kind, options, f"status {status}", ServerError, retried=True)
    if kind == "cut before processing":
        return Fault(kind, {"drop": True}, "cut", APIConnectionError, retried=True)
    if kind == "cut after commit":
        options = {"drop_after_commit": True}
        return Fault(kind, options, "cut", APIConnectionError, retried=True, commits=True)
    if kind == "slower than the timeout":
        options = {"delay": SLOW}
        return Fault(kind, options, "timeout", APITimeoutError, retried=True, commits=True)
    if kind == "garbage 200":
        options = {"status": 200, "body": rng.choice(_GARBAGE), "content_type": "text/plain"}
        return Fault(kind, options, "status 200", APIResponseValidationError, retried=False)
    assert kind == "402"
    return Fault(kind, {"status": 402}, "status 402", InsufficientCreditsError, retried=False)


_KIND_WEIGHTS: Final = {
    "429": 3,
    "429 Retry-After": 3,
    "429 Retry-After too long": 1,
    "5xx JSON": 4,
    "5xx HTML": 3,
    "cut before processing": 3,
    "cut after commit": 3,
    "slower than the timeout": 2,
    "garbage 200": 2,
    "402": 1,
}
_KINDS: Final = list(_KIND_WEIGHTS)
_WEIGHTS: Final = list(_KIND_WEIGHTS.values())
FAULT_KINDS: Final = tuple(_KINDS)


@dataclass(frozen=True)
class BlockPlan:
    """One metered block of the soak, decided before it runs.

    Attributes:
        reference: The block's reference, unique in the run.
        tool: The tool metered.
        units: The units given to `metered()`.
        billed_units: The units set on the meter inside the block, or `None`.
        body: What the body does.
        decorated: Run as a decorated function rather than a `with` block.
        check: The faults of the check's attempts, in order.
        spend: The faults of the spend's attempts, in order.
    """

    reference: str
    tool: str
    units: int | float
    billed_units: int | float | None
    body: Body
    decorated: bool
    check: tuple[Fault, ...]
    spend: tuple[Fault, ...]

    @property
    def final_units(self) -> int | float:
        return self.units if self.billed_units is None else self.billed_units


_UNITS: Final = (1, 2, 3, 0.5, 1.25, 2.5)


def _faults(rng: random.Random, rate: float) -> tuple[Fault, ...]:
    """Faults for consecutive attempts from the first: each attempt is faulted at `rate`,
    and an attempt that would end the request (success or a final error) ends the list."""
    faults: list[Fault] = []
    while len(faults) < MAX_ATTEMPTS and rng.random() < rate:
        faults.append(random_fault(rng))
        if not faults[-1].retried:
            break
    return tuple(faults)


def make_plans(
    rng: random.Random,
    count: int,
    prefix: str,
    *,
    tools: Sequence[str],
    is_async: bool,
    check_rate: float = 0.2,
    spend_rate: float = 0.35,
) -> list[BlockPlan]:
    """`count` plans with references `prefix-0`, `prefix-1`, ..."""
    bodies: list[Body] = ["complete", "raise", "skip"]
    weights = [80, 12, 5]
    if is_async:
        bodies.append("task_cancelled")
        weights.append(3)
    plans = []
    for n in range(count):
        body = rng.choices(bodies, weights=weights)[0]
        # A decorated function has no meter to cancel or to bill other units on.
        decorated = body in ("complete", "raise") and rng.random() < 0.2
        billed = rng.choice(_UNITS) if body == "complete" and not decorated else None
        plans.append(
            BlockPlan(
                reference=f"{prefix}-{n}",
                tool=rng.choice(tools),
                units=rng.choice(_UNITS),
                billed_units=billed if rng.random() < 0.3 else None,
                body=body,
                decorated=decorated,
                check=_faults(rng, check_rate),
                spend=_faults(rng, spend_rate),
            )
        )
    return plans


def queue_faults(fake: FakeAmaiServer, plan: BlockPlan) -> None:
    """Queue the plan's faults on a fake that only this block is using."""
    for endpoint, faults in (("check", plan.check), ("spend", plan.spend)):
        for fault in faults:
            fake.fail_next(endpoint, **fault.options)


@dataclass(frozen=True)
class Walk:
    """What a request's attempts come to under the retry rules."""

    attempts: int
    failure: Fault | None  # the fault that ended the request; None when it succeeded


def walk(faults: Sequence[Fault]) -> Walk:
    """Follow a request through its faults: retried ones lead to another attempt."""
    for attempt in range(MAX_ATTEMPTS):
        if attempt >= len(faults):
            return Walk(attempt + 1, None)
        if not faults[attempt].retried:
            return Walk(attempt + 1, faults[attempt])
    return Walk(MAX_ATTEMPTS, faults[MAX_ATTEMPTS - 1])


@dataclass(frozen=True)
class Expected:
    """What the SDK's documented rules say a plan comes to.

    Attributes:
        outcome: How the block ends.
        check_attempts: Requests made by the check.
        spend_attempts: Requests made by the spend (0 when there is none).
        error: The check's error, or the cause of `SpendFailedError`; `None` otherwise.
        committed: Whether the server charged the block by the time it ended.
    """

    outcome: Outcome
    check_attempts: int
    spend_attempts: int
    error: type[AmaiError] | None
    committed: bool


def expect(plan: BlockPlan) -> Expected:
    """The outcome of `plan` under the documented rules, with no fault but the planned ones."""
    check = walk(plan.check)
    if check.failure is not None:
        return Expected("check_failed", check.attempts, 0, check.failure.error, committed=False)
    if plan.body in ("raise", "task_cancelled"):
        return Expected("raised", check.attempts, 0, None, committed=False)
    if plan.body == "skip":
        return Expected("skipped", check.attempts, 0, None, committed=False)
    spend = walk(plan.spend)
    if spend.failure is None:
        return Expected("charged", check.attempts, spend.attempts, None, committed=True)
    committed = any(fault.commits for fault in plan.spend[: spend.attempts])
    return Expected("spend_failed", check.attempts, spend.attempts, spend.failure.error, committed)


def expected_seen(faults: Sequence[Fault], attempts: int) -> list[str]:
    """What the transport should see on each attempt: the fault's answer, or a 200."""
    return [faults[n].seen if n < len(faults) else "status 200" for n in range(attempts)]


def cost(prices: Mapping[str, int], tool: str, units: int | float) -> int:
    """The tokens `units` of `tool` cost: `ceil(price * units)` on the decimal value."""
    exact = Fraction(units) if isinstance(units, int) else Fraction(repr(units))
    return math.ceil(prices[tool] * exact)
