"""Reading Prometheus samples, from a registry or from a scrape's text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def samples(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def value(source: CollectorRegistry | Samples, name: str, **labels: str) -> float | None:
    found = samples(source) if isinstance(source, CollectorRegistry) else source
    return found.get((name, tuple(sorted(labels.items()))))


def names(source: CollectorRegistry | Samples) -> set[str]:
    found = samples(source) if isinstance(source, CollectorRegistry) else source
    return {name for name, _ in found}
