"""Virtual-host discovery against loopback endpoints: planted vhosts found, decoys and scope respected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.lab.hostweb import HostWeb
from tests.lab.vhostlab import (
    DECOYS,
    HTTP_VHOSTS,
    HTTPS_VHOSTS,
    MIRROR_IP,
    NAMES,
    OUT_OF_SCOPE,
    VHOST_IP,
    VhostLab,
    start_vhost_lab,
)
from workers.recon.http import fetch
from workers.recon.vhost import Answer, VhostRecord, VhostTarget, find_vhosts, similar


def corp_only(name: str) -> bool:
    """The tests' scope: the corp.test names and the lab's loopback addresses."""
    return name.endswith(".corp.test") or name.startswith("127.88.7.")


@pytest.fixture(scope="module")
def vlab() -> Iterator[VhostLab]:
    running = start_vhost_lab()
    yield running
    running.stop()


def target(web: HostWeb) -> VhostTarget:
    return VhostTarget(web.ip, web.port, "https" if web.tls else "http")


def run(targets: list[VhostTarget], names: list[str] = NAMES, **options: object) -> list[VhostRecord]:
    kwargs: dict = {"in_scope": corp_only, "timeout": 2.0, **options}
    return asyncio.run(find_vhosts(targets, names, **kwargs))


def hosts_of(web: HostWeb) -> list[str]:
    with web.lock:
        return [host for host, _ in web.requests]


def test_every_planted_vhost_found_and_no_decoy(vlab: VhostLab) -> None:
    records = run([target(vlab.http), target(vlab.https)])
    assert {r.host: r.title for r in records} == {**HTTP_VHOSTS, **HTTPS_VHOSTS}
    assert len(records) == len(HTTP_VHOSTS) + len(HTTPS_VHOSTS), "one record per name (as in ARL)"
    assert {r.scheme for r in records if r.host in HTTPS_VHOSTS} == {"https"}
    assert not {r.host for r in records} & set(DECOYS)


def test_progress_counts_every_endpoint_name_pair(vlab: VhostLab) -> None:
    seen: list[tuple[int, int]] = []
    names = ["admin.corp.test", "ghost.corp.test", "www.corp.test"]
    dead = VhostTarget("127.88.7.6", 9, "http")
    run([target(vlab.http), dead], names=names, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (6, 6)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_record_fields(vlab: VhostLab) -> None:
    records = run([target(vlab.http)], names=["admin.corp.test"])
    assert len(records) == 1
    doc = records[0].to_doc()
    port = vlab.http.port
    assert doc["ip"] == VHOST_IP and doc["port"] == port and doc["scheme"] == "http"
    assert doc["url"] == f"http://{VHOST_IP}:{port}" and doc["site"] == f"http://admin.corp.test:{port}"
    assert (doc["status_code"], doc["title"]) == (200, "Corp Admin Console")
    assert doc["body_length"] == len(vlab.http.pick("admin.corp.test", "/").raw())
    vuln = records[0].to_vuln_doc()
    assert vuln["target"] == doc["url"] and vuln["verify_obj"]["domain"] == "admin.corp.test"


def test_out_of_scope_names_are_never_sent(vlab: VhostLab) -> None:
    run([target(vlab.http)])
    assert OUT_OF_SCOPE not in hosts_of(vlab.http)


def test_out_of_scope_endpoint_is_not_contacted(vlab: VhostLab) -> None:
    before = len(hosts_of(vlab.mirror))
    records = run([target(vlab.mirror)], in_scope=lambda name: name.endswith(".corp.test"))
    assert records == []
    assert len(hosts_of(vlab.mirror)) == before


def test_same_vhost_behind_two_ips_reported_once(vlab: VhostLab) -> None:
    records = run([target(vlab.http), target(vlab.mirror)], names=["admin.corp.test"])
    assert [r.host for r in records] == ["admin.corp.test"]
    assert records[0].ip in (VHOST_IP, MIRROR_IP)


def test_name_bound(vlab: VhostLab) -> None:
    with vlab.http.lock:
        vlab.http.requests.clear()
    records = run(
        [target(vlab.http)], names=["ghost.corp.test", "www.corp.test", "admin.corp.test"], max_names=2
    )
    assert records == []
    assert len(hosts_of(vlab.http)) == 4 + 2  # the baseline, then two names
    assert "admin.corp.test" not in hosts_of(vlab.http)


def test_dead_endpoint_is_given_up_quickly() -> None:
    web = HostWeb("127.88.7.5", {}).start()
    port = web.port
    web.stop()
    started = time.monotonic()
    records = run([VhostTarget("127.88.7.5", port, "http")])
    assert records == []
    assert time.monotonic() - started < 10, "a closed endpoint must not wait out its timeouts"


def test_time_bound() -> None:
    slow = start_vhost_lab(delay=0.3)
    try:
        started = time.monotonic()
        records = run([target(slow.http)], deadline=started + 1.0, concurrency=1)
        requested = hosts_of(slow.http)
    finally:
        slow.stop()
    # One request at a time, 0.3 s each: none starts after the 1 s deadline.
    assert len(requested) <= 5
    assert len(records) < len(HTTP_VHOSTS)


def test_similar_ignores_echoed_names_only(vlab: VhostLab) -> None:
    async def ask(host: str) -> Answer:
        response = await fetch(VHOST_IP, vlab.http.port, tls=False, host=host, timeout=2.0)
        return Answer.of(response, host)

    async def answers() -> list[Answer]:
        return [await ask(h) for h in ("a1.corp.test", "zz9.example.org", "admin.corp.test")]

    one, two, admin = asyncio.run(answers())
    assert one.shown_title != two.shown_title
    assert similar(one, two)
    assert not similar(one, admin)
