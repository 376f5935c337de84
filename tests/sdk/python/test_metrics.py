"""`GET /metrics`, parsed by the official Prometheus client's OpenMetrics
parser; the counters must match work done through the SDK."""

import time

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from conftest import ISOLATION


def scrape(airlock):
    r = httpx.get(
        f"{airlock['endpoint']}/metrics",
        headers={"Authorization": f"Bearer {airlock['token']}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            samples[key] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_a_token(airlock):
    r = httpx.get(f"{airlock['endpoint']}/metrics", timeout=10)
    assert r.status_code == 401
    assert r.json()["code"] == "INVALID_TOKEN"


def test_counters_match_the_work_done(airlock, client):
    before = scrape(airlock)
    for _ in range(2):
        with client.sandbox.create() as sb:
            for _ in range(3):
                p = sb.spawn("true", stdout="null", stderr="null")
                assert p.wait()["code"] == 0

    def ended(samples):
        reasons = ("closed", "killed", "timed out", "agent exited", "daemon shutdown", "oom")
        return sum(value(samples, "airlock_sandboxes_ended_total", reason=r) for r in reasons)

    # A session sandbox ends just after its socket closes: wait for both.
    deadline = time.monotonic() + 10
    after = scrape(airlock)
    while ended(after) - ended(before) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = scrape(airlock)
    assert ended(after) - ended(before) == 2

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("airlock_sandboxes_created_total", isolation=ISOLATION) == 2
    assert delta("airlock_rpc_calls_total", method="spawn") == 6
    assert delta("airlock_create_seconds_count", isolation=ISOLATION) == 2
    assert delta("airlock_spawn_seconds_count", isolation=ISOLATION) == 6
    assert delta("airlock_pool_hits_total") + delta("airlock_pool_misses_total") == 2
    assert value(after, "airlock_sandboxes_running") >= 0
    assert delta("airlock_cpu_seconds_total") >= 0


def test_egress_counters_match_connections(airlock, client, upstreams):
    before = scrape(airlock)
    n = 3 * 1024 * 1024
    with client.sandbox.create(allow_net=[f"api.test:{upstreams.http_port}"]) as sb:
        p = sb.spawn(
            "bash",
            args=["-c", f"curl -s -o /dev/null http://api.test:{upstreams.http_port}/bytes/{n}; "
                        f"curl -s -m 5 http://api.test:{upstreams.https_port}/ || true"],
            stdout="null", stderr="null",
        )
        assert p.wait()["code"] == 0

    def done(samples):
        return value(samples, "airlock_egress_connections_total", verdict="denied") > value(
            before, "airlock_egress_connections_total", verdict="denied")

    deadline = time.monotonic() + 10
    after = scrape(airlock)
    while not done(after) and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape(airlock)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("airlock_egress_connections_total", verdict="allowed") == 1
    assert delta("airlock_egress_connections_total", verdict="denied") == 1
    assert delta("airlock_egress_bytes_total", direction="in") > n
    assert 0 < delta("airlock_egress_bytes_total", direction="out") < 10_000
