"""A pool of the SDK's that checks no certificate says so, in a warning, however it was told.

`verify=False` logged its warning already; an `ssl.SSLContext` that checks nothing (or no
host name) turned verification off as surely, and said nothing. A pool passed in as
`http_client` is the caller's: the SDK does not look inside it, and logs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from amaimedia import AiohttpTransport, AmaiClient, AsyncAmaiClient
from tests.answers import KEY


def unchecked() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def no_host_names() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    return context


def build_sync(verify: Any) -> None:
    AmaiClient(api_key=KEY, verify=verify).close()


def build_async(verify: Any) -> None:
    asyncio.run(AsyncAmaiClient(api_key=KEY, verify=verify).aclose())


def build_aiohttp_client(verify: Any) -> None:
    asyncio.run(AsyncAmaiClient(api_key=KEY, verify=verify, transport="aiohttp").aclose())


def build_aiohttp_transport(verify: Any) -> None:
    AiohttpTransport(verify=verify)


BUILDERS = [build_sync, build_async, build_aiohttp_client, build_aiohttp_transport]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "amaimedia" and record.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize(
    ("context", "said"),
    [
        (unchecked, "checks no certificate (verify_mode=CERT_NONE)"),
        (no_host_names, "checks no host name (check_hostname=False)"),
    ],
)
def test_a_context_that_checks_nothing_is_warned_about(
    caplog: pytest.LogCaptureFixture,
    build: Callable[[Any], None],
    context: Callable[[], ssl.SSLContext],
    said: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    build(context())
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"verify is an ssl.SSLContext that {said}")
    assert "anyone on the network path can read the API key" in warning


@pytest.mark.parametrize("build", BUILDERS)
def test_verify_false_is_warned_about_on_every_transport(
    caplog: pytest.LogCaptureFixture, build: Callable[[Any], None]
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    build(False)
    [warning] = warnings_of(caplog)
    assert warning.startswith("verify=False: TLS certificates are not checked")


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("verify", [True, ssl.create_default_context])
def test_checked_certificates_give_no_warning(
    caplog: pytest.LogCaptureFixture, build: Callable[[Any], None], verify: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    build(verify() if callable(verify) else verify)
    assert warnings_of(caplog) == []


def test_a_pool_of_your_own_is_yours(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    with httpx.Client(verify=False) as http:
        AmaiClient(api_key=KEY, http_client=http).close()
    assert warnings_of(caplog) == []
