"""OpenTelemetry spans and metrics for the observer (see `_observer.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._observer import Recorder

__all__ = ["recorder_for"]


def recorder_for(tracer_provider: Any, meter_provider: Any) -> Recorder | None:
    """The recorder for these providers; `None` while OpenTelemetry is not wired in."""
    del tracer_provider, meter_provider
    return None
