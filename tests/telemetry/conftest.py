from __future__ import annotations

from collections.abc import Iterator

import pytest

from amaimedia.testing import FakeAmaiServer

from .otel import Telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    yield recorded
    recorded.shutdown()


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def key(fake: FakeAmaiServer) -> str:
    return fake.create_key(balance=10_000)
