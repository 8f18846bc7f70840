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


def test_the_global_providers_are_used_even_when_set_after_the_first_call() -> None:
    # In a fresh interpreter: the global providers are set once per process.
    code = (
        FIRST_CALL
        + """
import time
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from amaimedia._telemetry import RECHECK_S

client.check("chat")  # no SDK yet: nothing recorded, nothing to record to
exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
time.sleep(RECHECK_S * 1.5)
client.spend("chat", reference="job-1")
print([span.name for span in exporter.get_finished_spans()])
[scope] = reader.get_metrics_data().resource_metrics[0].scope_metrics
print(sorted(metric.name for metric in scope.metrics))
"""
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import amaimedia\n{code}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spans, instruments = out.splitlines()[-2:]
    assert spans == "['amaimedia.spend']"
    assert "amaimedia.tokens.charged" in instruments
