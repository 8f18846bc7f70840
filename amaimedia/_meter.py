"""`Meter`: what a metered block knows about its own billing, with no I/O of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

from ._html import html_table
from ._models import Charge, Quote, SpendRequest
from ._types import Units

__all__ = ["Meter", "MeterState"]

MeterState: TypeAlias = Literal[
    "running", "cancelled", "failed", "charging", "charged", "spend_failed"
]
"""Where a metered block stands.

- `running`: inside the block, the work is under way.
- `cancelled`: the block called `cancel()`; nothing was charged.
- `failed`: the block raised; nothing was charged.
- `charging`: the block completed and the spend is being sent.
- `charged`: the spend went through; `charge` holds it.
- `spend_failed`: the spend did not go through; the error says how to replay it.
"""


class Meter:
    """The billing state of one metered block, given by `with client.metered(...) as meter`.

    The quote and the reference are fixed when the block starts, before any work; the
    charge is there once the block has exited.

    ```python
    with client.metered("dub", units=3) as meter:
        video = dub(source)
        meter.units = 2.5  # bill what was actually used
    print(meter.charge.charged)
    ```

    Attributes:
        tool: The tool being metered.
        reference: The spend's idempotency key, fixed before the work starts.
        quote: The answer of the check made when the block started.
        charge: The answer of the spend, once the block exited and it went through;
            `None` before that, and when nothing was charged.
        state: Where the block stands: `running`, `cancelled`, `failed`, `charging`,
            `charged` or `spend_failed`.
    """

    __slots__ = ("_on_cancel", "_units", "charge", "quote", "reference", "state", "tool")

    tool: str
    reference: str
    quote: Quote
    charge: Charge | None
    state: MeterState

    def __init__(self, tool: str, units: Units, reference: str, quote: Quote) -> None:
        self.tool = tool
        self._units = units
        self.reference = reference
        self.quote = quote
        self.charge = None
        self.state = "running"
        # Set by the block: gives back the block's reservation the moment it is cancelled.
        self._on_cancel: Callable[[], None] | None = None

    @property
    def units(self) -> Units:
        """The units the spend will charge; set it inside the block to bill actual use.

        Raises:
            ValueError: The new value is not a positive, finite number.
            TypeError: The new value is not an int or float.
            RuntimeError: The block has already ended.
        """
        return self._units

    @units.setter
    def units(self, units: Units) -> None:
        if self.state != "running":
            raise RuntimeError(
                f"meter.units can only change inside the metered block; it is {self.state}"
            )
        self._units = SpendRequest.from_arguments(
            tool=self.tool, units=units, reference=self.reference
        ).units

    @property
    def cancelled(self) -> bool:
        """Whether the block called `cancel()`."""
        return self.state == "cancelled"

    def cancel(self) -> None:
        """Leave the block without charging: nothing billable happened.

        The tokens the block reserved are released at once, for other blocks to use.

        Raises:
            RuntimeError: The block has already ended.
        """
        if self.state not in ("running", "cancelled"):
            raise RuntimeError(
                f"only a running metered block can be cancelled; it is {self.state}"
            )
        self.state = "cancelled"
        release, self._on_cancel = self._on_cancel, None
        if release is not None:
            release()

    def _rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("tool", self.tool),
            ("units", self._units),
            ("reference", self.reference),
            ("state", self.state),
            ("cost_tokens", self.quote.cost_tokens),
        ]
        if self.charge is not None:
            rows += [
                ("charged", self.charge.charged),
                ("balance_after", self.charge.balance_after),
            ]
        return rows

    def __repr__(self) -> str:
        # One line: the balance stays for the notebook table.
        shown = ", ".join(
            f"{name}={value!r}" for name, value in self._rows() if name != "balance_after"
        )
        return f"Meter({shown})"

    def _repr_html_(self) -> str:
        """What `repr()` shows, and the balance after the charge, as an HTML table."""
        return html_table(type(self).__name__, self._rows())
