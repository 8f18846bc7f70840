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


def test_import_loads_none_of_the_lazy_modules() -> None:
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


# --- what `from amaimedia import AmaiClient` loads, and what waits for the first call ------

# pydantic's model machinery: what `import pydantic` alone does not load, and defining any
# model does. The SDK's models, its error mapping and its metered blocks wait with it.
MODEL_MACHINERY = [
    "pydantic.main",
    "pydantic.fields",
    "pydantic.types",
    "annotated_types",
    "amaimedia._models",
]
NEVER_BY_THE_SYNC_CLIENT = [
    "amaimedia._async_client",
    "amaimedia._async_metered",
    "amaimedia._metered",
    "amaimedia._journal",
    "amaimedia._raw_response",
]


def modules_after(code: str, names: list[str]) -> set[str]:
    """Which of `names` are loaded after running `code` in a fresh interpreter."""
    report = f"import sys, json\nprint(json.dumps([m for m in {names!r} if m in sys.modules]))"
    probe = f"{code}\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "from amaimedia import AmaiClient",
        "from amaimedia import AmaiClient\nAmaiClient(api_key='amai_live_x').close()",
        "from amaimedia import AsyncAmaiClient\nAsyncAmaiClient(api_key='amai_live_x')",
        "import amaimedia\namaimedia.AmaiClient(api_key='amai_live_x').with_options(timeout=5)",
    ],
)
def test_a_client_is_imported_and_built_without_the_model_machinery(code: str) -> None:
    assert modules_after(code, MODEL_MACHINERY) == set()


def test_the_sync_client_loads_neither_the_async_one_nor_the_metered_blocks() -> None:
    built = "from amaimedia import AmaiClient\nAmaiClient(api_key='amai_live_x').close()"
    assert modules_after(built, NEVER_BY_THE_SYNC_CLIENT) == set()


CALL = """
import httpx
from amaimedia import AmaiClient
quote = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 5}
answer = httpx.Response(200, json=quote)
http = httpx.Client(transport=httpx.MockTransport(lambda request: answer))
client = AmaiClient(api_key="amai_live_x", http_client=http)
"""


def test_the_first_call_loads_the_models() -> None:
    assert modules_after(CALL + "client.check('chat')", MODEL_MACHINERY) == set(MODEL_MACHINERY)


@pytest.mark.parametrize(
    "code", ["import amaimedia; amaimedia.Quote", "from amaimedia import Charge"]
)
def test_a_model_loads_with_its_first_use(code: str) -> None:
    assert modules_after(code, MODEL_MACHINERY) == set(MODEL_MACHINERY)


def test_the_models_are_pydantic_models_under_the_public_path() -> None:
    code = """
import pickle
import amaimedia
from pydantic import BaseModel
for model in (amaimedia.Quote, amaimedia.Charge, amaimedia.CheckRequest, amaimedia.ErrorBody):
    assert issubclass(model, BaseModel), model
    assert model.__module__ == "amaimedia", model.__module__
quote = amaimedia.Quote(ok=True, allowed=True, cost_tokens=5, balance_after=5)
assert quote.model_dump() == {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 5}
assert "request_id" not in amaimedia.Quote.model_json_schema()["properties"]
assert pickle.loads(pickle.dumps(quote)) == quote
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_first_answer_is_the_public_model_before_the_package_names_it() -> None:
    # The call loads the models, not the package's attribute: the answer's class still
    # shows, and pickles under, the public path.
    code = (
        CALL
        + """
import pickle, sys
quote = client.check("chat")
assert "Quote" not in vars(sys.modules["amaimedia"])
assert type(quote).__module__ == "amaimedia", type(quote).__module__
assert pickle.loads(pickle.dumps(quote)) == quote
import amaimedia
assert type(quote) is amaimedia.Quote
assert isinstance(quote, amaimedia.Quote) and quote.allowed
"""
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_error_of_a_first_call_shows_the_public_path() -> None:
    code = """
import httpx
from amaimedia import AmaiClient
body = {"ok": False, "error": "insufficient_credits", "cost_tokens": 5, "balance": 1}
answer = httpx.Response(402, json=body)
http = httpx.Client(transport=httpx.MockTransport(lambda request: answer))
client = AmaiClient(api_key="amai_live_x", http_client=http)
try:
    client.spend("chat", reference="job-1")
except Exception as exc:
    error = exc
assert type(error).__module__ == "amaimedia", type(error).__module__
import amaimedia
assert isinstance(error, amaimedia.InsufficientCreditsError)
assert str(error).startswith("402 insufficient_credits: the balance does not cover the cost")
"""
    subprocess.run([sys.executable, "-c", code], check=True)
