"""OpenTelemetry loads on a client's first call, never with `import amaimedia`; without it,
the SDK records nothing and looks for it once.

Each check runs in a fresh interpreter, since this one has imported OpenTelemetry already.
"""

from __future__ import annotations

import json
import subprocess
import sys

FIRST_CALL = """
import httpx
from amaimedia.testing import FakeAmaiServer
fake = FakeAmaiServer()
client = amaimedia.AmaiClient(
    api_key=fake.create_key(), http_client=httpx.Client(transport=fake.transport())
)
"""


def loaded_otel(code: str) -> list[str]:
    probe = (
        f"import amaimedia\n{code}\nimport sys, json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_import_amaimedia_loads_no_opentelemetry() -> None:
    assert loaded_otel("amaimedia.AmaiClient, amaimedia.AsyncAmaiClient") == []


def test_building_a_client_loads_no_opentelemetry() -> None:
    assert loaded_otel(FIRST_CALL) == []


def test_the_first_call_loads_opentelemetry() -> None:
    loaded = loaded_otel(FIRST_CALL + "client.check('chat')")
    assert "opentelemetry.trace" in loaded
    assert "opentelemetry.metrics" in loaded
    # The API only: the SDK is the application's to configure.
    assert not any(name.startswith("opentelemetry.sdk") for name in loaded)


def test_without_opentelemetry_calls_record_nothing_and_look_for_it_once() -> None:
    code = (
        """
import sys
class Finder:
    asked = 0
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            Finder.asked += 1
            raise ImportError("opentelemetry is not installed")
        return None
sys.meta_path.insert(0, Finder())
"""
        + FIRST_CALL
        + """
from amaimedia._telemetry import recorder_for
for _ in range(3):
    client.check("chat")
    with client.metered("chat"):
        pass
assert client._observer.recorder() is None
assert recorder_for(None, None) is None
assert len(fake.spends) == 3
print("asked", Finder.asked)
"""
    )
    probe = f"import amaimedia\n{code}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["asked", "1"]
