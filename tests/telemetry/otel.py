"""Private OpenTelemetry SDK providers for the telemetry tests, and ways to read them.

`Telemetry` holds a `TracerProvider` exporting to an `InMemorySpanExporter` and a
`MeterProvider` read by an `InMemoryMetricReader`. Tests pass `telemetry.providers` to the
client: the global providers are never set, so no test leaks state into another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amaimedia import Meter
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        [span] = [span for span in self.spans() if span.name == name]
        return span

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "amaimedia"
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of each data point of `name`: a sum's value, a histogram's count."""
        metric = self.metrics().get(name)
        if metric is None:
            return []
        return [
            (dict(point.attributes or {}), getattr(point, "value", getattr(point, "count", None)))
            for point in metric.data.data_points
        ]

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def fake_client(harness: Harness, fake: FakeAmaiServer, key: str, **options: Any) -> Any:
    """A client of the harness's kind on `fake`, in process, at the fake's base URL."""
    transport = fake.async_transport() if harness.is_async else fake.transport()
    http = harness.http_client(transport=transport)
    options.setdefault("base_url", fake.BASE_URL)
    return harness.client(http_client=http, api_key=key, **options)


def run_block(
    harness: Harness, block: Any, work: Callable[[Meter], object] | None = None
) -> Meter:
    """Run `work(meter)` as the body of a metered block, with `with` or `async with`."""
    if harness.is_async:

        async def run() -> Meter:
            async with block as meter:
                if work is not None:
                    work(meter)
            return meter  # type: ignore[no-any-return]

        return harness.run(run())  # type: ignore[no-any-return]
    with block as meter:
        if work is not None:
            work(meter)
    return meter  # type: ignore[no-any-return]
