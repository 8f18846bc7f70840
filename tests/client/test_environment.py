"""What the environment can change, as docs/configuration.md says it.

Whoever sets the environment of a process can change where its key goes and whom it trusts.
The page lists every variable the SDK (and Python's `ssl`, under it) reads; these tests hold
each line of it to what a client does, so that the list cannot drift from the code. How
the proxy variables route (`NO_PROXY` included) is tested on the wire, in
tests/wire/test_proxies.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amaimedia import AmaiClient, AmaiError
from tests.answers import KEY

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
TITLE = "## What the environment can change"


def section() -> str:
    text = PAGE.read_text(encoding="utf-8")
    assert TITLE in text, f"{PAGE.name} has no section {TITLE!r}"
    return text.split(TITLE, 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    "name",
    [
        "AMAI_API_KEY",
        "AMAI_BASE_URL",
        "AMAI_LOG",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSLKEYLOGFILE",
        "trust_env=False",
    ],
)
def test_the_section_names(name: str) -> None:
    assert f"`{name}`" in section()


def test_the_key_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    other = "amai_live_" + "o" * 32
    monkeypatch.setenv("AMAI_API_KEY", other)
    with AmaiClient() as from_env, AmaiClient(api_key=KEY) as given:
        assert repr(from_env).count(other[-4:]) == 1
        assert KEY[-4:] in repr(given)
        assert other[-4:] not in repr(given)


def test_the_base_url_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAI_BASE_URL", "https://elsewhere.example")
    with AmaiClient(api_key=KEY) as from_env:
        assert str(from_env.base_url).startswith("https://elsewhere.example")
    with AmaiClient(api_key=KEY, base_url="https://api.amaimedia.com") as given:
        assert str(given.base_url).startswith("https://api.amaimedia.com")


def test_plain_http_from_the_environment_only_reaches_the_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAI_BASE_URL", "http://elsewhere.example")
    with pytest.raises(ValueError, match="AMAI_BASE_URL"):
        AmaiClient(api_key=KEY)


def test_amai_log_turns_the_logger_on() -> None:
    # In a process of its own: the handler it installs is one per process.
    code = (
        "import logging\n"
        "from amaimedia import AmaiClient\n"
        f"AmaiClient(api_key={KEY!r}).close()\n"
        "logger = logging.getLogger('amaimedia')\n"
        "print(logging.getLevelName(logger.level), len(logger.handlers))"
    )
    env = {**os.environ, "AMAI_LOG": "debug"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.split() == ["DEBUG", "1"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
        ("SSL_CERT_DIR", "/nonexistent/certs"),
        ("HTTPS_PROXY", "proxy:port:x"),
        ("ALL_PROXY", "proxy:port:x"),
    ],
)
def test_trust_env_false_ignores_the_proxy_and_certificate_variables(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # A value the pool cannot use shows that it was read: the client refuses to be built.
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        AmaiClient(api_key=KEY)
    AmaiClient(api_key=KEY, trust_env=False).close()


def test_tls_secrets_go_to_sslkeylogfile_only_with_trust_env(tmp_path: Path) -> None:
    # In a process of its own: the SDK builds a TLS context once per process and shares it.
    code = (
        "from amaimedia._transports._tls import TLSSettings\n"
        "for trust_env in (True, False):\n"
        "    print(TLSSettings.create(True, trust_env=trust_env).ssl_context().keylog_filename)"
    )
    keylog = tmp_path / "keys.log"
    env = {**os.environ, "SSLKEYLOGFILE": str(keylog)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    # Python's ssl module reads the variable itself; trust_env=False clears it.
    assert out.split() == [str(keylog), "None"]


def test_no_key_anywhere_is_an_amai_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAI_API_KEY", "")  # an empty variable counts as unset
    with pytest.raises(AmaiError, match="AMAI_API_KEY"):
        AmaiClient()


def test_the_section_shows_how_to_ignore_the_environment() -> None:
    blocks = re.findall(r"```python\n(.*?)```", section(), flags=re.DOTALL)
    assert any("trust_env=False" in block and "base_url=" in block for block in blocks)
