"""Text from the server is shown, never obeyed: control characters are escaped.

`str(error)` is one log line. A server (or anything between it and the client) that puts a
newline in its message would inject a fake log line; one that sends terminal escapes
(`ESC ]0;… BEL` retitles the window, `ESC [2J` clears the screen) would drive the
terminal of whoever reads the log or runs the command. Every server-provided string the
SDK puts in a message or a log line has its control characters escaped (`\\n`, `\\x1b`,
`\\u2028`); the attributes that hold what the server sent (`body`, `error`,
`request_id`) keep it as it was.
"""

from __future__ import annotations

import logging
import unicodedata

import httpx
import pytest
import respx

from amaimedia import (
    APIConnectionError,
    APIError,
    ForbiddenError,
    ServerError,
    SpendFailedError,
)
from amaimedia._cli import ExitCode, main
from amaimedia.testing import FakeAmaiServer
from tests.answers import error, queue
from tests.conftest import Harness

# A fake log line, a window title, a cleared screen, a bell, and a C1 "CSI" for terminals
# that take the 8-bit form.
HOSTILE = "denied\n[2026-07-03 12:00:00 INFO amaimedia] all good\x1b]0;pwned\x07\x1b[2J\x9b2J"
SHOWN = "denied\\n[2026-07-03 12:00:00 INFO amaimedia] all good\\x1b]0;pwned\\x07\\x1b[2J\\x9b2J"


BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def assert_printable(text: str) -> None:
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI]
    assert bad == [], f"control characters in {text!r}"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, unchanged", "plain text, unchanged"),
        ("tab\there", "tab\\there"),
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("line\u2028paragraph\u2029", "line\\u2028paragraph\\u2029"),
        ("bidi \u202eevil\u202c \u2066x\u2069", "bidi \\u202eevil\\u202c \\u2066x\\u2069"),
        ("ünïcödé and emoji 🎬 stay", "ünïcödé and emoji 🎬 stay"),
        (HOSTILE, SHOWN),
    ],
)
def test_printable(raw: str, shown: str) -> None:
    from amaimedia._printable import printable

    assert printable(raw) == shown


def test_a_message_with_control_characters_is_one_line(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(403, "forbidden", message=HOSTILE))
    client = harness.client(api)

    with pytest.raises(ForbiddenError) as exc_info:
        harness.run(client.check("chat"))

    exc = exc_info.value
    assert_printable(str(exc))
    assert_printable(exc.message)
    assert SHOWN in str(exc)
    assert isinstance(exc.body, dict)
    assert exc.body["message"] == HOSTILE  # the raw body stays on the error


def test_an_error_string_with_control_characters(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(400, "bad\x1b[2J\nrequest"))
    client = harness.client(api)
    with pytest.raises(APIError) as exc_info:
        harness.run(client.check("chat"))
    assert_printable(str(exc_info.value))
    assert str(exc_info.value).startswith("400 bad\\x1b[2J\\nrequest: ")
    assert exc_info.value.error == "bad\x1b[2J\nrequest"


@pytest.mark.parametrize("value", [b"req\x1b[2J", b"req\x9b2J", b"req\x7f"])
def test_a_request_id_with_control_characters(
    harness: Harness, api: respx.Router, value: bytes
) -> None:
    queue(api["check"], httpx.Response(403, headers=[(b"x-request-id", value)]))
    client = harness.client(api)
    with pytest.raises(ForbiddenError) as exc_info:
        harness.run(client.check("chat"))
    exc = exc_info.value
    assert_printable(str(exc))
    assert exc.request_id == value.decode("latin-1")
    assert str(exc).endswith(f"(request_id={value.decode('latin-1')!r})".replace("'", ""))


def test_a_redirect_location_with_control_characters(harness: Harness, api: respx.Router) -> None:
    location = "https://elsewhere.example/\u202eevil".encode()
    queue(api["check"], httpx.Response(302, headers=[(b"location", location)]))
    client = harness.client(api)
    with pytest.raises(APIError) as exc_info:
        harness.run(client.check("chat"))
    assert_printable(str(exc_info.value))
    assert "elsewhere.example/\\u202eevil" in str(exc_info.value)


def test_text_from_the_transport_is_escaped(harness: Harness, api: respx.Router) -> None:
    # httpx and aiohttp quote what the peer sent in some of their messages.
    queue(api["check"], httpx.RemoteProtocolError("peer sent \x1b[2J\nHTTP/1.1 200 OK"))
    client = harness.client(api, max_retries=0)
    with pytest.raises(APIConnectionError) as exc_info:
        harness.run(client.check("chat"))
    assert_printable(str(exc_info.value))
    assert "peer sent \\x1b[2J\\nHTTP/1.1 200 OK" in str(exc_info.value)


def test_a_failed_spend_of_a_metered_block_is_one_line(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["spend"], error(403, "forbidden", message=HOSTILE))
    client = harness.client(api)

    async def run_async() -> None:
        async with client.metered("chat"):
            pass

    def run_sync() -> None:
        with client.metered("chat"):
            pass

    with pytest.raises(SpendFailedError) as exc_info:  # noqa: PT012 - one call either way
        if harness.is_async:
            harness.run(run_async())
        else:
            run_sync()
    assert_printable(str(exc_info.value))
    assert SHOWN in str(exc_info.value)


def test_log_lines_hold_no_control_characters(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="amaimedia")
    queue(
        api["check"],
        error(503, "server_error", message=HOSTILE, headers={"x-request-id": "r\x1b[2J"}),
    )
    client = harness.client(api)
    harness.run(client.check("chat"))

    lines = [logging.Formatter().format(record) for record in caplog.records]
    assert any("Retrying" in line and SHOWN in line for line in lines)
    assert any("-> 503 (request_id=r\\x1b[2J)" in line for line in lines)
    for line in lines:
        assert_printable(line)


def test_the_command_line_prints_server_text_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        monkeypatch.setenv("AMAI_API_KEY", key)
        fake.fail_next("check", status=503, body={"ok": False, "message": HOSTILE}, times=3)
        code = main(["check", "chat", "--max-retries", "0"])
    captured = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert SHOWN in captured.err
    assert_printable(captured.out)
    for line in captured.err.splitlines():
        assert_printable(line)
    assert captured.err.count("\n") == 1


def test_the_server_error_class_is_unchanged_by_escaping(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(503, "server_error", message="down\nfor maintenance"))
    client = harness.client(api, max_retries=0)
    with pytest.raises(ServerError) as exc_info:
        harness.run(client.check("chat"))
    assert exc_info.value.message == "down\\nfor maintenance"
