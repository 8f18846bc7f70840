"""`repr(client)` shows the settings in use, as the Configuration page says it does.

The page lists the settings that are properties of the client and says that the repr
shows them: the test reads that list from the page, so that the two cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import Harness
from tests.planted import SECRET, assert_secret_absent

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented_settings() -> list[str]:
    """The properties named in the page's sentence about `repr(client)`."""
    text = " ".join(PAGE.read_text().split())
    claim = re.search(r"properties of the client \(([^)]*)\), and `repr\(client\)` shows", text)
    assert claim is not None, "docs/configuration.md no longer says what repr(client) shows"
    names = re.findall(r"`client\.(\w+)`", claim.group(1))
    assert names
    return names


def test_repr_shows_every_setting_the_page_names(harness: Harness, tmp_path: Path) -> None:
    journal = tmp_path / "spends.sqlite3"
    client = harness.client(
        api_key=SECRET,
        timeout=12.5,
        max_retries=4,
        max_retry_after=7.5,
        total_timeout=90.0,
        spend_journal=journal,
    )
    shown = repr(client)
    for name in documented_settings():
        assert re.search(rf"[( ]{name}=", shown), f"repr(client) does not show {name}: {shown}"
    assert shown == (
        f"{type(client).__name__}(base_url='https://api.amaimedia.com', "
        "api_key='amai_live_…XYZW', timeout=12.5, max_retries=4, max_retry_after=7.5, "
        f"total_timeout=90.0, spend_journal={client.spend_journal!r})"
    )
    assert client.spend_journal is not None
    assert str(journal.name) in client.spend_journal
    assert_secret_absent(shown, "repr(client)")


def test_repr_without_a_journal_or_deadline_says_so(harness: Harness) -> None:
    shown = repr(harness.client())
    assert shown.endswith("max_retry_after=60.0, total_timeout=None, spend_journal=None)")


def test_a_copy_shows_its_own_settings(harness: Harness) -> None:
    copy = harness.client().with_options(max_retry_after=3, total_timeout=5)
    assert "max_retry_after=3.0, total_timeout=5.0" in repr(copy)


def test_repr_shows_where_a_postgresql_journal_is_never_its_password(
    harness: Harness, postgres_url: str
) -> None:
    password = urlsplit(postgres_url).password
    assert password
    client = harness.client(spend_journal=postgres_url)
    shown = repr(client)
    assert f"spend_journal={client.spend_journal!r}" in shown
    assert str(urlsplit(postgres_url).port) in shown
    assert password not in shown
