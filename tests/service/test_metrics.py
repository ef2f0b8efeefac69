from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry
from scrape import names, samples, value

from lakeexportd.service.metrics import RESULTS, Metrics
from lakeexportd.service.metrics_http import MetricsServer, MetricsServerError

FIXED_NAMES = (
    "lakeexportd_export_runs_total", "lakeexportd_rows_written_total",
    "lakeexportd_bytes_written_total", "lakeexportd_export_duration_seconds_bucket",
    "lakeexportd_last_success_timestamp_seconds", "lakeexportd_lag_seconds",
    "lakeexportd_table_versions", "lakeexportd_feeds", "lakeexportd_config_reloads_total",
    "lakeexportd_ksqldb_requests_total", "lakeexportd_retries_total",
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(CollectorRegistry(), clock=clock)


def test_every_fixed_name_is_exposed_once_a_feed_has_run(metrics: Metrics) -> None:
    """A feed that ran once and a ksqlDB request make every DESIGN §8 metric name appear."""
    metrics.add_feed("orders")
    metrics.set_feed_counts(active=1, disabled=0)
    metrics.observe_run("orders", "success", duration_s=1.5, rows=10, bytes_written=100)
    metrics.set_progress("orders", last_success=1.0, lag_origin=1.0, table_versions=2)
    metrics.observer().request("/query-stream", "200")
    assert set(FIXED_NAMES) <= names(metrics.registry)


def test_feed_series_appear_with_zeros_and_disappear_on_removal(metrics: Metrics) -> None:
    """add_feed creates zeroed series for every result; remove_feed removes all of them."""
    metrics.add_feed("orders")
    for result in RESULTS:
        assert value(metrics.registry, "lakeexportd_export_runs_total",
                     feed="orders", result=result) == 0
    assert value(metrics.registry, "lakeexportd_rows_written_total", feed="orders") == 0
    metrics.set_progress("orders", lag_origin=1.0)
    metrics.remove_feed("orders")
    assert not any(("feed", "orders") in labels for _, labels in samples(metrics.registry))


def test_a_run_of_a_removed_feed_recreates_no_series(metrics: Metrics) -> None:
    """A run that finishes after its feed was removed is not counted (no zombie series)."""
    metrics.add_feed("orders")
    metrics.remove_feed("orders")
    metrics.observe_run("orders", "success", duration_s=1, rows=5)
    metrics.set_progress("orders", last_success=5.0)
    assert not any(("feed", "orders") in labels for _, labels in samples(metrics.registry))


def test_success_counts_rows_and_bytes_failures_only_runs(metrics: Metrics) -> None:
    """Rows and bytes grow on success only; every result counts a run and a duration."""
    metrics.add_feed("orders")
    metrics.observe_run("orders", "success", duration_s=2, rows=7, bytes_written=70)
    metrics.observe_run("orders", "failed", duration_s=1, rows=99, bytes_written=99)
    reg = metrics.registry
    assert value(reg, "lakeexportd_rows_written_total", feed="orders") == 7
    assert value(reg, "lakeexportd_bytes_written_total", feed="orders") == 70
    assert value(reg, "lakeexportd_export_runs_total", feed="orders", result="failed") == 1
    assert value(reg, "lakeexportd_export_duration_seconds_count", feed="orders") == 2


def test_lag_keeps_growing_between_runs(metrics: Metrics, clock: Clock) -> None:
    """Lag is computed at scrape time from the last watermark, so it grows while no run ends."""
    metrics.add_feed("orders")
    metrics.set_progress("orders", lag_origin=clock.now - 30)
    assert value(metrics.registry, "lakeexportd_lag_seconds", feed="orders") == 30
    clock.now += 60
    assert value(metrics.registry, "lakeexportd_lag_seconds", feed="orders") == 90


def test_unknown_lag_has_no_series(metrics: Metrics) -> None:
    """A feed that never committed has no lag value rather than a misleading one."""
    metrics.add_feed("orders")
    assert value(metrics.registry, "lakeexportd_lag_seconds", feed="orders") is None


def test_retries_are_attributed_to_the_feed_of_the_running_export(metrics: Metrics) -> None:
    """The shared client's observer counts a retry for the feed whose run made the request."""
    metrics.add_feed("orders")
    metrics.add_feed("users")
    observer = metrics.observer()
    with metrics.feed_context("users"):
        observer.retry("/query-stream")
        observer.request("/query-stream", "503")
    observer.retry("/info")  # outside any run: no feed to blame
    assert value(metrics.registry, "lakeexportd_retries_total", feed="users") == 1
    assert value(metrics.registry, "lakeexportd_retries_total", feed="orders") == 0
    assert value(metrics.registry, "lakeexportd_ksqldb_requests_total",
                 endpoint="/query-stream", code="503") == 1


def test_metrics_use_only_the_given_registry() -> None:
    """Two Metrics on two registries coexist: nothing touches the global registry."""
    Metrics(CollectorRegistry())
    Metrics(CollectorRegistry())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_endpoints_serve_metrics_health_and_readiness(metrics: Metrics) -> None:
    """/metrics scrapes the registry, /healthz is 200, /readyz follows the ready callback."""
    ready = [False]
    server = MetricsServer(metrics.registry, "127.0.0.1", free_port(), lambda: ready[0])
    server.start()
    try:
        host, port = server.address
        with httpx.Client(base_url=f"http://{host}:{port}") as http:
            assert "lakeexportd_build_info" in http.get("/metrics").text
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 503
            ready[0] = True
            assert http.get("/readyz").status_code == 200
            assert http.get("/nope").status_code == 404
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error(metrics: Metrics) -> None:
    """Binding a port another socket holds names the address and the metrics.listen key."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = MetricsServer(metrics.registry, "127.0.0.1", port, lambda: True)
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{port}.*metrics\.listen"):
            server.start()


def test_ipv6_loopback_is_bound_exactly() -> None:
    """A [::1] listen address binds an IPv6 socket on ::1 only (this machine kind has ::1)."""
    server = MetricsServer(CollectorRegistry(), "::1", 0, lambda: True)
    server.start()
    try:
        host, port = server.address
        assert host == "::1"
        assert httpx.get(f"http://[::1]:{port}/healthz").status_code == 200
    finally:
        server.stop()
