"""What a caller's own `http_client` adds to each request goes out, as httpx would send it.

The SDK makes its requests from what the pool merged into the first one to each URL, so
these tests change the pool between calls: new headers, new query parameters, a cookie
an answer sets. Each request must be the one the pool's `build_request` makes then.
"""

from __future__ import annotations

from typing import Any

import httpx
import respx

from tests.answers import QUOTE, queue, requests
from tests.conftest import Harness

CHECK_URL = "https://api.amaimedia.com/api/v1/tools/check"
Pool = httpx.Client | httpx.AsyncClient


def sent(api: respx.Router) -> httpx.Request:
    return requests(api.calls)[-1]


def expected(api: respx.Router, client: Any, http: Pool) -> httpx.Request:
    """What the pool's own `build_request` makes of the last request the SDK sent."""
    config, request = client._config, sent(api)
    return http.build_request(
        "POST",
        request.url.copy_with(query=None),
        content=request.content,
        headers=config.headers,
        timeout=config.timeout,
    )


def started(harness: Harness, api: respx.Router, **pool: Any) -> tuple[Any, Any]:
    """A pool of the caller's (made with `pool`), and a client on it that made a request."""
    http = harness.http_client(api, **pool)
    client = harness.client(http_client=http)
    harness.run(client.check("chat"))
    return http, client


def test_a_request_is_the_one_the_pool_builds(harness: Harness, api: respx.Router) -> None:
    http = harness.http_client(api, headers={"X-Team": "billing"}, params={"region": "eu"})
    client = harness.client(http_client=http)
    for _ in range(2):  # the first request to a URL, and one made from its template
        harness.run(client.check("chat"))
        request = sent(api)
        built = expected(api, client, http)
        assert request.url == built.url
        assert str(request.url) == f"{CHECK_URL}?region=eu"
        assert request.headers.raw == built.headers.raw
        assert request.headers["X-Team"] == "billing"
        assert request.extensions["timeout"] == built.extensions["timeout"]


def test_headers_changed_on_the_pool_go_out_with_the_next_request(
    harness: Harness, api: respx.Router
) -> None:
    http, client = started(harness, api)
    assert "X-Team" not in sent(api).headers

    http.headers["X-Team"] = "billing"  # changed in place
    harness.run(client.check("chat"))
    assert sent(api).headers["X-Team"] == "billing"

    http.headers = httpx.Headers({"X-Team": "search"})  # replaced
    harness.run(client.check("chat"))
    assert sent(api).headers["X-Team"] == "search"
    assert sent(api).headers.raw == expected(api, client, http).headers.raw


def test_query_parameters_set_on_the_pool_go_out_with_the_next_request(
    harness: Harness, api: respx.Router
) -> None:
    http, client = started(harness, api)
    http.params = httpx.QueryParams({"region": "eu"})
    harness.run(client.check("chat"))
    assert str(sent(api).url) == f"{CHECK_URL}?region=eu"


def test_a_cookie_an_answer_sets_goes_out_with_the_next_request(
    harness: Harness, api: respx.Router
) -> None:
    http = harness.http_client(api)
    client = harness.client(http_client=http)
    queue(
        api.routes["check"],
        httpx.Response(200, json=QUOTE, headers={"Set-Cookie": "lb=node-7; Path=/"}),
    )
    harness.run(client.check("chat"))
    assert "Cookie" not in sent(api).headers
    harness.run(client.check("chat"))  # the same URL: its template was made before
    assert sent(api).headers["Cookie"] == "lb=node-7"
    harness.run(client.spend("chat", 1, reference="job-1"))
    assert sent(api).headers["Cookie"] == "lb=node-7"


def test_a_cookie_the_pool_no_longer_holds_does_not_go_out(
    harness: Harness, api: respx.Router
) -> None:
    http, client = started(harness, api, cookies={"lb": "node-7"})
    assert sent(api).headers["Cookie"] == "lb=node-7"
    http.cookies.clear()
    harness.run(client.check("chat"))
    assert "Cookie" not in sent(api).headers


def test_a_pool_that_builds_its_own_requests_builds_each_one(
    harness: Harness, api: respx.Router
) -> None:
    base = httpx.AsyncClient if harness.is_async else httpx.Client
    built: list[int] = []

    class Signing(base):  # type: ignore[misc, valid-type]
        def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
            request = super().build_request(*args, **kwargs)
            built.append(1)
            request.headers["X-Signature"] = f"sig-{len(built)}"
            return request

    handler = api.async_handler if harness.is_async else api.handler
    http = Signing(transport=httpx.MockTransport(handler))
    client = harness.client(http_client=http)
    signatures = []
    for _ in range(3):
        harness.run(client.check("chat"))
        signatures.append(sent(api).headers["X-Signature"])
    assert len(set(signatures)) == 3  # each request built, and signed, on its own
    harness.run(http.aclose() if harness.is_async else http.close())
