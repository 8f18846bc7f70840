"""The `amai_fake` pytest fixture, installed with the SDK as the `amaimedia` plugin.

pytest loads this module in every run where the SDK is installed, so it imports
nothing beyond pytest itself (and the packages on its path, `amaimedia` and
`amaimedia.testing`, which load only the version until a name of theirs is used): the
fake, and with it the SDK, httpx and pydantic, is imported when a test asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from amaimedia.testing import FakeAmaiServer

__all__ = ["amai_fake"]


@pytest.fixture
def amai_fake() -> FakeAmaiServer:
    """A fresh [`FakeAmaiServer`][amaimedia.testing.FakeAmaiServer] for each test.

    ```python
    def test_checkout(amai_fake):
        key = amai_fake.create_key(balance=50)
        with amai_fake.client(key) as client:
            assert client.check("image", units=3).allowed is False
    ```
    """
    from amaimedia.testing import FakeAmaiServer

    return FakeAmaiServer()
