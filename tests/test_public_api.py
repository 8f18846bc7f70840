"""The public surface: `__all__` is complete and sorted, and public classes show the public path.

Tracebacks, reprs and the API reference name `amaimedia.AmaiClient`, never the private module
a class is defined in. The same holds for `amaimedia.testing`, the one public subpackage. That
the API reference documents every public name is checked with the docs
(`tests/docs/test_docs.py`).
"""

from __future__ import annotations

import importlib.resources
import types

import amaimedia
import amaimedia.testing
from amaimedia import AmaiClient


def test_all_is_sorted() -> None:
    assert amaimedia.__all__ == sorted(amaimedia.__all__)


def test_all_is_complete() -> None:
    public = {
        name
        for name in dir(amaimedia)
        if not name.startswith("_") and not isinstance(getattr(amaimedia, name), types.ModuleType)
    }
    assert public - set(amaimedia.__all__) == set()
    assert all(hasattr(amaimedia, name) for name in amaimedia.__all__)


def test_public_classes_report_the_public_module() -> None:
    classes = [getattr(amaimedia, n) for n in amaimedia.__all__]
    classes = [obj for obj in classes if isinstance(obj, type)]
    assert AmaiClient in classes
    assert {cls.__name__: cls.__module__ for cls in classes} == {
        cls.__name__: "amaimedia" for cls in classes
    }


def test_the_raw_response_clients_are_public() -> None:
    # What `with_raw_response` returns can be named in an annotation.
    client = AmaiClient(api_key="amai_live_test_0123456789abcdef")
    async_client = amaimedia.AsyncAmaiClient(api_key="amai_live_test_0123456789abcdef")
    assert type(client.with_raw_response) is amaimedia.RawResponseClient
    assert type(async_client.with_raw_response) is amaimedia.AsyncRawResponseClient
    assert repr(amaimedia.RawResponseClient) == "<class 'amaimedia.RawResponseClient'>"
    client.close()


def test_package_is_typed() -> None:
    assert importlib.resources.files("amaimedia").joinpath("py.typed").is_file()


def test_testing_public_names() -> None:
    assert amaimedia.testing.__all__ == sorted(amaimedia.testing.__all__)
    assert set(amaimedia.testing.__all__) == {"FakeAmaiServer", "RecordedRequest", "SpendRecord"}
    for name in amaimedia.testing.__all__:
        assert getattr(amaimedia.testing, name).__module__ == "amaimedia.testing"
