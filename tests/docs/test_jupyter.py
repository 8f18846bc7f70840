"""Notebooks: the HTML tables of results, meters and errors, and the example notebook.

The example notebook is executed once per run, in a real kernel of this interpreter, and
every test about its outputs reads that one execution.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar, Protocol

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    AuthenticationError,
    Charge,
    ErrorBody,
    ForbiddenError,
    InsufficientCreditsError,
    Meter,
    PendingSpend,
    Quote,
    RateLimitError,
    ServerError,
    SpendFailedError,
)
from amaimedia.testing import FakeAmaiServer

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"
KERNEL_NAME = "amaimedia-tests"
HOSTILE = "<script>alert('x')</script> & \"more\""


class HTMLRepr(Protocol):
    def _repr_html_(self) -> str: ...


# --- reading a table back -------------------------------------------------------------------


class _TableReader(HTMLParser):
    """Reads `html_table` markup back, and fails on anything a table should not hold."""

    ALLOWED: ClassVar[set[str]] = {"table", "caption", "tr", "th", "td"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.caption = ""
        self.cells: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.ALLOWED, f"unexpected <{tag}>"
        # Alignment only: no colour, font or background that a dark theme would fight.
        assert attrs in ([], [("style", "text-align: left")]), attrs
        if tag in ("caption", "th", "td"):
            self._in = tag
            if tag != "caption":
                self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "caption":
            self.caption += data
        elif self._in is not None:
            self.cells[-1] += data


def read_table(markup: str) -> tuple[str, list[tuple[str, str]]]:
    """`(caption, [(name, text), ...])` of a table, its text unescaped."""
    reader = _TableReader()
    reader.feed(markup)
    reader.close()
    names, values = reader.cells[::2], reader.cells[1::2]
    return reader.caption, list(zip(names, values, strict=True))


# --- the tables, exactly --------------------------------------------------------------------

QUOTE = Quote(ok=True, allowed=True, cost_tokens=120, balance_after=80)
CHARGE = Charge(ok=True, charged=120, balance_after=80, reference="job-42")
CREATED_AT = datetime(2026, 7, 3, 12, 30, tzinfo=timezone.utc)


def charged_meter(reference: str = "job-42") -> Meter:
    meter = Meter("dub", 3, reference, QUOTE)
    meter.units = 2.5
    meter.charge = Charge(ok=True, charged=100, balance_after=100, reference=reference)
    meter.state = "charged"
    return meter


def spend_failed() -> SpendFailedError:
    cause = ServerError("the server failed to answer the request", status_code=503)
    return SpendFailedError(tool="chat", units=2, reference="job-7", cause=cause, journaled=False)


def test_a_quote_is_this_markup_exactly() -> None:
    assert QUOTE._repr_html_() == (
        "<table>\n"
        "<caption>Quote</caption>\n"
        '<tr><th style="text-align: left">ok</th><td style="text-align: left">True</td></tr>\n'
        '<tr><th style="text-align: left">allowed</th>'
        '<td style="text-align: left">True</td></tr>\n'
        '<tr><th style="text-align: left">cost_tokens</th>'
        '<td style="text-align: left">120</td></tr>\n'
        '<tr><th style="text-align: left">balance_after</th>'
        '<td style="text-align: left">80</td></tr>\n'
        "</table>"
    )


TABLES: list[tuple[str, HTMLRepr, list[tuple[str, str]]]] = [
    (
        "Quote",
        QUOTE,
        [("ok", "True"), ("allowed", "True"), ("cost_tokens", "120"), ("balance_after", "80")],
    ),
    (
        "Quote",
        Quote(ok=True, allowed=False, cost_tokens=5, balance_after=3, currency="tokens"),
        [
            ("ok", "True"),
            ("allowed", "False"),
            ("cost_tokens", "5"),
            ("balance_after", "3"),
            ("currency", "tokens"),  # a field the SDK does not know yet is shown too
        ],
    ),
    (
        "Charge",
        CHARGE,
        [("ok", "True"), ("charged", "120"), ("balance_after", "80"), ("reference", "job-42")],
    ),
    (
        "ErrorBody",
        ErrorBody(ok=False, error="forbidden"),
        [
            ("ok", "False"),
            ("error", "forbidden"),
            ("message", "—"),
            ("cost_tokens", "—"),
            ("balance", "—"),
        ],
    ),
    (
        "Meter",
        Meter("dub", 3, "job-42", QUOTE),
        [
            ("tool", "dub"),
            ("units", "3"),
            ("reference", "job-42"),
            ("state", "running"),
            ("cost_tokens", "120"),
        ],
    ),
    (
        "Meter",
        charged_meter(),
        [
            ("tool", "dub"),
            ("units", "2.5"),
            ("reference", "job-42"),
            ("state", "charged"),
            ("cost_tokens", "120"),
            ("charged", "100"),
            ("balance_after", "100"),
        ],
    ),
    (
        "PendingSpend",
        PendingSpend("chat", 2, "job-7", CREATED_AT, 0, None, None),
        [
            ("tool", "chat"),
            ("units", "2"),
            ("reference", "job-7"),
            ("created_at", "2026-07-03 12:30:00+00:00"),
            ("attempts", "0"),
            ("last_error", "—"),
            ("error_code", "—"),
        ],
    ),
    (
        "PendingSpend",
        PendingSpend("chat", 2, "job-7", CREATED_AT, 3, "402 insufficient_credits: no", "x"),
        [
            ("tool", "chat"),
            ("units", "2"),
            ("reference", "job-7"),
            ("created_at", "2026-07-03 12:30:00+00:00"),
            ("attempts", "3"),
            ("last_error", "402 insufficient_credits: no"),
            ("error_code", "x"),
        ],
    ),
    (
        "InsufficientCreditsError",
        InsufficientCreditsError(
            "the balance does not cover the cost",
            body={"ok": False, "error": "insufficient_credits", "cost_tokens": 200},
            request_id="req-1",
            cost_tokens=200,
            balance=70,
        ),
        [
            ("status_code", "402"),
            ("error", "insufficient_credits"),
            ("message", "the balance does not cover the cost"),
            ("cost_tokens", "200"),
            ("balance", "70"),
            ("request_id", "req-1"),
            ("body", '{"ok": false, "error": "insufficient_credits", "cost_tokens": 200}'),
        ],
    ),
    (
        "RateLimitError",
        RateLimitError(
            "too many requests", status_code=429, error="rate_limited", retry_after=1.5
        ),
        [
            ("status_code", "429"),
            ("error", "rate_limited"),
            ("message", "too many requests"),
            ("retry_after", "1.5"),
        ],
    ),
    (
        "APIError",
        APIError("the server refused the request", status_code=418, body="<html>teapot</html>"),
        [
            ("status_code", "418"),
            ("message", "the server refused the request"),
            ("body", "<html>teapot</html>"),
        ],
    ),
    (
        "APIResponseValidationError",
        APIResponseValidationError("not a valid Quote", status_code=200, body=[1, "a"]),
        [("status_code", "200"), ("message", "not a valid Quote"), ("body", '[1, "a"]')],
    ),
    (
        "APIConnectionError",
        APIConnectionError("no usable answer"),
        [("message", "no usable answer")],
    ),
    (
        "SpendFailedError",
        spend_failed(),
        [
            ("message", spend_failed().message),
            ("tool", "chat"),
            ("units", "2"),
            ("reference", "job-7"),
            ("journaled", "False"),
        ],
    ),
]


@pytest.mark.parametrize(("caption", "obj", "rows"), TABLES, ids=[t[0] for t in TABLES])
def test_the_table_of_each_class(caption: str, obj: HTMLRepr, rows: list[tuple[str, str]]) -> None:
    assert read_table(obj._repr_html_()) == (caption, rows)


def test_an_error_from_spend_shows_its_reference() -> None:
    error = AmaiError("gone")
    error.reference = "job-9"
    assert read_table(error._repr_html_()) == (
        "AmaiError",
        [("message", "gone"), ("reference", "job-9")],
    )


def test_a_long_value_is_cut_short() -> None:
    error = ServerError("bad gateway", status_code=502, body="x" * 10_000)
    _, rows = read_table(error._repr_html_())
    body = dict(rows)["body"]
    assert len(body) == 500
    assert body.endswith("x…")


# --- text reprs stay as they were ------------------------------------------------------------

REPRS: list[tuple[object, str]] = [
    (QUOTE, "Quote(ok=True, allowed=True, cost_tokens=120, balance_after=80)"),
    (CHARGE, "Charge(ok=True, charged=120, balance_after=80, reference='job-42')"),
    (
        charged_meter(),
        "Meter(tool='dub', units=2.5, reference='job-42', state='charged', "
        "cost_tokens=120, charged=100)",
    ),
    (
        PendingSpend("chat", 2, "job-7", CREATED_AT, 0, None, None),
        "PendingSpend(tool='chat', units=2, reference='job-7', created_at=datetime.datetime"
        "(2026, 7, 3, 12, 30, tzinfo=datetime.timezone.utc), attempts=0, last_error=None, "
        "error_code=None)",
    ),
    (
        InsufficientCreditsError("no", request_id="req-1"),
        "InsufficientCreditsError(status_code=402, error='insufficient_credits', "
        "request_id='req-1')",
    ),
    (APIConnectionError("no usable answer"), "APIConnectionError('no usable answer')"),
]


@pytest.mark.parametrize(("obj", "expected"), REPRS, ids=[type(r[0]).__name__ for r in REPRS])
def test_repr_is_unchanged(obj: object, expected: str) -> None:
    assert repr(obj) == expected


# --- hostile values are escaped ---------------------------------------------------------------

HOSTILE_OBJECTS: list[HTMLRepr] = [
    Charge(ok=True, charged=1, balance_after=0, reference=HOSTILE),
    Quote(ok=True, allowed=True, cost_tokens=1, balance_after=0, note=HOSTILE),
    charged_meter(HOSTILE),
    PendingSpend("chat", 1, HOSTILE, CREATED_AT, 1, HOSTILE, None),
    ServerError(HOSTILE, status_code=503, body=HOSTILE),
    APIError("refused", status_code=400, body={"ok": False, "error": HOSTILE}),
    SpendFailedError(
        tool="chat", units=1, reference=HOSTILE, cause=AmaiError(HOSTILE), journaled=True
    ),
]


@pytest.mark.parametrize("obj", HOSTILE_OBJECTS, ids=lambda obj: type(obj).__name__)
def test_hostile_strings_are_escaped(obj: HTMLRepr) -> None:
    markup = obj._repr_html_()
    assert "<script" not in markup
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; " in markup
    # And the escaping is exact: the text reads back as it was (inside JSON for a body).
    assert any("<script>alert('x')</script> & " in value for _, value in read_table(markup)[1])


# --- the key never shows --------------------------------------------------------------------


def _objects_made_with(server: FakeAmaiServer, key: str, journal: Path) -> list[Any]:
    """A result, meter, pending spend and error of every kind, all from requests with `key`."""
    made: list[Any] = []

    def catch(call: Any, *args: Any) -> AmaiError:
        with pytest.raises(AmaiError) as info:
            call(*args)
        return info.value

    with server.client(key, max_retries=0, spend_journal=journal) as client:
        made.append(client.check("chat"))
        made.append(client.spend("chat", reference="job-1"))
        with client.metered("chat") as meter:
            pass
        made.append(meter)
        made.append(catch(client.spend, "dub", 1_000))
        server.fail_next("check", status=429, retry_after=3)
        made.append(catch(client.check, "chat"))
        server.fail_next("check", status=503, body=b"<html>down</html>", content_type="text/html")
        made.append(catch(client.check, "chat"))
        server.fail_next("check", status=200, body={"unexpected": True})
        made.append(catch(client.check, "chat"))
        server.fail_next("check", drop=True)
        made.append(catch(client.check, "chat"))
        server.fail_next("spend", status=503)
        with pytest.raises(SpendFailedError) as failed, client.metered("chat"):
            pass
        made.append(failed.value)
        made.extend(client.pending_spends())
        server.suspend(key)
        made.append(catch(client.check, "chat"))
    with server.client(key + "x", max_retries=0) as stranger:
        made.append(catch(stranger.check, "chat"))
    return made


def test_a_planted_key_never_appears_in_any_table(tmp_path: Path) -> None:
    server = FakeAmaiServer()
    key = server.create_key(balance=100)
    made = _objects_made_with(server, key, tmp_path / "spends.sqlite3")

    kinds = {type(obj) for obj in made}
    assert {Quote, Charge, Meter, PendingSpend, SpendFailedError, APIConnectionError} <= kinds
    assert {InsufficientCreditsError, RateLimitError, ServerError} <= kinds
    assert {APIResponseValidationError, ForbiddenError, AuthenticationError} <= kinds
    # The errors do hold the key, in their response's request: the tables must leave it out.
    responses = [obj.response for obj in made if getattr(obj, "response", None) is not None]
    assert len(responses) == 6
    assert all(key in response.request.headers["authorization"] for response in responses)
    for obj in made:
        markup = obj._repr_html_()
        assert key not in markup
        assert key[len("amai_live_") :] not in markup
        assert "authorization" not in markup.lower()
        assert "Bearer" not in markup


# --- the sync client inside a running event loop ------------------------------------------------


def test_the_sync_client_works_while_an_event_loop_runs(tmp_path: Path) -> None:
    """A notebook cell runs while the kernel's loop runs: nothing may start or drive a loop."""
    server = FakeAmaiServer()
    key = server.create_key(balance=100)

    async def cell() -> list[object]:
        asyncio.get_running_loop()  # this is the situation of a notebook cell
        with server.serve() as base_url:
            client = AmaiClient(
                api_key=key, base_url=base_url, spend_journal=tmp_path / "spends.sqlite3"
            )
            with client:
                quote = client.check("chat")
                charge = client.spend("chat", reference="cell-1")
                with client.metered("chat", units=2) as meter:
                    pass

                @client.metered("chat")
                def work() -> str:
                    return "done"

                done = work()
                replayed = client.replay_pending()
        return [quote.cost_tokens, charge.charged, meter.charge, done, replayed]

    cost, charged, meter_charge, done, replayed = asyncio.run(cell())
    assert (cost, charged, done, replayed) == (5, 5, "done", [])
    assert isinstance(meter_charge, Charge)
    assert meter_charge.charged == 10
    assert server.balance(key) == 100 - 5 - 10 - 5


# --- the example notebook ---------------------------------------------------------------------


def test_the_committed_notebook_is_clean() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.kernelspec.language == "python"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has code cells"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.id} has outputs"
        assert cell.execution_count is None, f"cell {cell.id} has an execution count"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example notebook, run top to bottom in a kernel of this interpreter: outputs by id.

    The kernel spec is written to a temporary directory and found only there, so the kernel
    is this venv's Python on any machine, and the user's Jupyter and IPython settings do
    not apply.
    """
    home = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(home / "kernels" / KERNEL_NAME, overrides={"display_name": "amaimedia"})
    workdir = home / "work"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("AMAI_", "JUPYTER", "IPYTHON")) or name.lower().endswith("_proxy"):
                patch.delenv(name)
        patch.setenv("JUPYTER_PATH", str(home))
        patch.setenv("JUPYTER_CONFIG_DIR", str(home / "config"))
        patch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
        patch.setenv("JUPYTER_PLATFORM_DIRS", "1")
        patch.setenv("IPYTHONDIR", str(home / "ipython"))
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        assert spec.argv[0] == sys.executable

        notebook = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(
            notebook,
            kernel_name=KERNEL_NAME,
            timeout=60,
            startup_timeout=60,
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()  # raises CellExecutionError on the first cell that fails
    return {cell.id: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}


def _stdout(outputs: list[Any]) -> str:
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def _result(outputs: list[Any]) -> dict[str, str]:
    [result] = [o for o in outputs if o.output_type == "execute_result"]
    data: dict[str, str] = result.data
    return data


@pytest.mark.slow
def test_the_notebook_runs_without_errors_or_warnings(executed: dict[str, Any]) -> None:
    assert list(executed) == [
        "server",
        "check",
        "spend",
        "metered",
        "insufficient",
        "async",
        "ledger",
        "close",
    ]
    for cell_id, outputs in executed.items():
        kinds = {output.output_type for output in outputs}
        assert "error" not in kinds, cell_id
        stderr = "".join(
            o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"
        )
        if cell_id == "insufficient":
            # The spend it shows failing is logged, once, as the SDK logs every spend that
            # failed for good (Python prints a warning nobody handles to stderr).
            [line] = stderr.splitlines()
            assert line.startswith("spend of dub x5 failed (reference=req_"), line
            assert "402 insufficient_credits" in line
        else:
            assert stderr == "", cell_id


@pytest.mark.slow
def test_the_notebook_shows_results_as_tables(executed: dict[str, Any]) -> None:
    check = _result(executed["check"])
    assert check["text/plain"] == "Quote(ok=True, allowed=True, cost_tokens=120, balance_after=80)"
    assert read_table(check["text/html"]) == (
        "Quote",
        [("ok", "True"), ("allowed", "True"), ("cost_tokens", "120"), ("balance_after", "80")],
    )
    assert read_table(_result(executed["spend"])["text/html"]) == (
        "Charge",
        [
            ("ok", "True"),
            ("charged", "120"),
            ("balance_after", "80"),
            ("reference", "notebook-dub-1"),
        ],
    )
    caption, rows = read_table(_result(executed["metered"])["text/html"])
    assert caption == "Meter"
    assert dict(rows)["state"] == "charged"
    assert (dict(rows)["charged"], dict(rows)["balance_after"]) == ("10", "70")


@pytest.mark.slow
def test_the_notebook_charges_once_and_shows_the_error(executed: dict[str, Any]) -> None:
    assert _stdout(executed["spend"]) == "the replay charged nothing new: balance still 80\n"
    assert _stdout(executed["insufficient"]).startswith("402 insufficient_credits: ")
    caption, rows = read_table(_result(executed["insufficient"])["text/html"])
    assert caption == "InsufficientCreditsError"
    assert (dict(rows)["cost_tokens"], dict(rows)["balance"]) == ("200", "70")
    assert _result(executed["async"])["text/plain"] == "[6, 6, 6]"
    assert _stdout(executed["ledger"]) == "balance 52 of 200 tokens, 5 charges in the ledger\n"


@pytest.mark.slow
def test_the_notebook_never_shows_a_key(executed: dict[str, Any]) -> None:
    everything = json.dumps(executed)
    assert "amai_live_" not in everything
    assert "Bearer" not in everything
