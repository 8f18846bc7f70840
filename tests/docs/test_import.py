"""`import amaimedia` stays lean: what only some programs use loads when they use it.

The same holds for the testing kit: `import amaimedia.testing` loads no HTTP server (nor
pytest) until one is served. Each check runs in a fresh interpreter, since this one has
imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Loaded on first use only: the testing kit, the command line, the spend journal (and
# with it sqlite3), the aiohttp transport (and aiohttp), and tenacity, which only a
# retry needs.
LAZY = [
    "amaimedia.testing",
    "amaimedia._cli",
    "amaimedia._journal._sqlite",
    "amaimedia._transports._aiohttp",
    "sqlite3",
    "aiohttp",
    "tenacity",
]


def loaded_after(code: str) -> set[str]:
    """The modules of `LAZY` that are loaded after running `code` in a fresh interpreter."""
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps([m for m in {LAZY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_loads_only_the_clients_models_and_errors() -> None:
    assert loaded_after("import amaimedia") == set()


def test_a_call_that_succeeds_loads_nothing_more() -> None:
    code = """
import httpx, amaimedia
quote = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 5}
answer = httpx.Response(200, json=quote)
http = httpx.Client(transport=httpx.MockTransport(lambda request: answer))
with amaimedia.AmaiClient(api_key="amai_live_x", http_client=http) as client:
    client.check("chat")
"""
    assert loaded_after(code) == set()


@pytest.mark.parametrize(
    ("code", "loaded"),
    [
        ("import amaimedia; amaimedia.AiohttpTransport", {"amaimedia._transports._aiohttp"}),
        (
            "import amaimedia\n"
            "amaimedia.AsyncAmaiClient(api_key='amai_live_x', transport='aiohttp')",
            {"amaimedia._transports._aiohttp"},
        ),
        ("import amaimedia.testing", {"amaimedia.testing"}),
    ],
)
def test_what_is_used_is_loaded(code: str, loaded: set[str]) -> None:
    assert loaded_after(code) >= loaded


def test_aiohttp_itself_loads_with_the_first_request_not_the_client() -> None:
    # Importing aiohttp takes a tenth of a second: never when a client is built inside a
    # running event loop, but off the loop, when the first request needs it.
    built = (
        "import amaimedia\namaimedia.AsyncAmaiClient(api_key='amai_live_x', transport='aiohttp')"
    )
    assert "aiohttp" not in loaded_after(built)


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_importing_stays_light() -> None:
    loaded = run_python(
        "import sys, amaimedia\n"
        "print('amaimedia.testing' in sys.modules)\n"
        "import amaimedia.testing\n"
        "print(sorted(m for m in ('http.server', 'socketserver', 'pytest') if m in sys.modules))"
    )
    assert loaded.splitlines() == ["False", "[]"]
