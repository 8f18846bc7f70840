"""No secret reaches OpenTelemetry: the key, a journal's password and request bodies.

Everything the SDK can make is run with private SDK providers (checks, spends, retried
spends, failures, metered blocks that charge, fail, cancel or are refused, a replay), on
an SQLite-journaled and a PostgreSQL-journaled client, then every exported span (name,
attributes, events, links, status) and every metric data point's attributes are searched.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from amaimedia import AmaiError
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

from .otel import Telemetry, fake_client, run_block

BODY_MARK = "job-secret-body-marker"


def everything(harness: Harness, fake: FakeAmaiServer, client: Any) -> None:
    harness.run(client.check("chat", 2))
    harness.run(client.spend("dub", reference="job-1"))
    fake.fail_next("spend", status=429, retry_after=1)
    harness.run(client.spend("chat", reference="job-2"))
    fake.fail_next("spend", status=503, times=3)
    with contextlib.suppress(AmaiError):
        harness.run(client.spend("chat", reference="job-3"))
    run_block(harness, client.metered("chat"))
    run_block(harness, client.metered("chat"), lambda meter: meter.cancel())
    with contextlib.suppress(ValueError):
        run_block(harness, client.metered("chat"), lambda _: int("x"))
    fake.fail_next("spend", status=503, times=3)
    with contextlib.suppress(AmaiError):
        run_block(harness, client.metered("chat"))
    harness.run(client.replay_pending())
    fake.fail_next("check", drop=True, times=3)
    with contextlib.suppress(AmaiError):
        harness.run(client.check("chat"))


def exported_text(telemetry: Telemetry) -> list[str]:
    """Every string OpenTelemetry was given, spans and metrics alike."""
    texts: list[str] = []
    for span in telemetry.spans():
        texts.append(span.name)
        texts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        texts.append(str(span.status.description))
    for name, metric in telemetry.metrics().items():
        texts.append(name)
        for point in metric.data.data_points:
            texts.extend(f"{k}={v}" for k, v in (point.attributes or {}).items())
    return texts


def assert_nowhere(secret: str, texts: list[str]) -> None:
    assert secret
    leaks = [text for text in texts if secret in text]
    assert leaks == []


def test_the_key_is_in_no_span_or_metric_sqlite(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry, tmp_path: Path
) -> None:
    client = fake_client(
        harness,
        fake,
        key,
        max_retries=2,
        spend_journal=tmp_path / "spends.sqlite3",
        **telemetry.providers,
    )
    everything(harness, fake, client)

    texts = exported_text(telemetry)
    assert {"amaimedia.check", "amaimedia.spend", "amaimedia.metered"} <= set(texts)
    assert any(text.startswith("amaimedia.journal.location=") for text in texts)
    assert_nowhere(key, texts)
    # Nor the part after the prefix, which is what an attacker needs.
    assert_nowhere(key.removeprefix("amai_live_"), texts)
    # Request bodies are JSON documents: none is an attribute.
    assert not any('"units"' in text or '"tool"' in text for text in texts)


def test_the_key_and_the_password_are_in_no_span_or_metric_postgres(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry, postgres_url: str
) -> None:
    password = urlsplit(postgres_url).password
    client = fake_client(
        harness, fake, key, max_retries=2, spend_journal=postgres_url, **telemetry.providers
    )
    everything(harness, fake, client)

    texts = exported_text(telemetry)
    assert any(text.startswith("amaimedia.journal.location=") for text in texts)
    assert_nowhere(key, texts)
    if password is None:
        pytest.fail("the test server's URL has no password to look for")
    assert_nowhere(password, texts)
