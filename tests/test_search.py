"""Finding tasks in the list: search (q), several statuses, worker, created-time range and sort.

A real ``controlplane serve`` over 3,000 task documents written straight into its database
(the shapes the API and the consumer write); every answer is checked against a plain Python
filter and sort of the same documents: the exact total, the order, and pages that cover the
matching tasks once.
"""

from __future__ import annotations

import datetime as dt
import random
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.store.tasks import new_task_document
from tests.conftest import make_stack
from tests.stack import Stack

pytestmark = pytest.mark.integration

N = 3000
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
STATUSES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
WORKERS = ("celery@alpha", "celery@beta", "celery@gamma")
NAMES = ("Acme weekly", "ACME daily", "acme-prod", "Example scan", "示例任务", "Beta check", None)
TARGETS = ("acme.example.com", "10.0.0.0/24", "https://Portal.acme.test/", "EXAMPLE.org", "beta.test", None)


def make_docs() -> list[dict[str, Any]]:
    rng = random.Random(11)
    docs = []
    for i in range(N):
        name, target = rng.choice(NAMES), rng.choice(TARGETS)
        data = {"name": f"{name} {i}" if name else None, "target": target}
        doc: dict[str, Any] = dict(
            new_task_document(
                celery_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                task_type=rng.choice(("domain_task", "ip_task")),
                data=data,
                created_time=T0 + i * 60 + rng.random(),
                rev=i + 1,
            )
        )
        status = rng.choice(STATUSES)
        doc["status"] = status
        if status != "PENDING":
            doc["worker"] = rng.choice(WORKERS)
            doc["start_time"] = doc["created_time"] + rng.uniform(1, 500)
        if status == "SUCCESS":
            doc["outcome"] = {"result": "ok", "runtime": rng.choice((0.5, 1.25, 3.0, rng.uniform(0, 90)))}
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> Iterator[tuple[Stack, list]]:
    stack = make_stack(tmp_path_factory.mktemp("search"), mongo_server)
    try:
        stack.start_api()
        docs = make_docs()
        stack.db.tasks.insert_many([dict(d) for d in docs])
        yield stack, docs
    finally:
        stack.close()


# -- the reference: a plain filter and sort of the documents ---------------------------


def starts(value: Any, q: str) -> bool:
    return isinstance(value, str) and value.lower().startswith(q.lower())


def expected(docs: list[dict[str, Any]], **params: str) -> list[str]:
    statuses = set(params["status"].split(",")) if "status" in params else None

    def keep(d: dict[str, Any]) -> bool:
        return (
            (statuses is None or d["status"] in statuses)
            and ("task_type" not in params or d["task_type"] == params["task_type"])
            and ("worker" not in params or d.get("worker") == params["worker"])
            and ("after" not in params or d["created_time"] >= float(params["after"]))
            and ("before" not in params or d["created_time"] < float(params["before"]))
            and ("q" not in params or starts(d["name"], params["q"]) or starts(d["target"], params["q"]))
        )

    sort = params.get("sort", "-created")
    field = sort.lstrip("-")
    matching = list(filter(keep, docs))
    if field == "status":
        ordered = sorted(matching, key=lambda d: (d["status"], -d["created_time"]))
    else:
        # A task without the value (not started, no runtime) is the smallest: first ascending.
        def value(d: dict[str, Any]) -> Any:
            if field == "started":
                return d.get("start_time")
            if field == "runtime":
                return (d.get("outcome") or {}).get("runtime")
            return d["created_time"]

        ordered = sorted(
            matching,
            key=lambda d: (value(d) is not None, value(d) or 0, d["created_time"]),
            reverse=sort.startswith("-"),
        )
    return [d["celery_id"] for d in ordered]


def listing(stack: Stack, **params: Any) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    resp = stack.request("GET", f"/api/celery_task/?{query}")
    assert resp.status == 200 and resp.code == 200, resp
    return dict(resp.data)


def every_page(stack: Stack, size: int, **params: Any) -> tuple[int, list[str]]:
    """Every page of a listing, in order; the total each page gave must agree."""
    seen: list[str] = []
    totals = set()
    page = 1
    while True:
        data = listing(stack, page=page, size=size, **params)
        totals.add(data["total"])
        if not data["items"]:
            break
        seen.extend(i["celery_id"] for i in data["items"])
        page += 1
    assert len(totals) == 1, totals
    return totals.pop(), seen


def reference_params(params: dict[str, str]) -> dict[str, str]:
    out = dict(params)
    if "created_after" in out:
        out["after"] = str(iso_to_epoch(out.pop("created_after")))
    if "created_before" in out:
        out["before"] = str(iso_to_epoch(out.pop("created_before")))
    return out


def iso_to_epoch(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


# -- search ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"q": "acme"},
        {"q": "ACME"},
        {"q": "aCmE d"},  # one spelling of "ACME daily"
        {"q": "Example"},  # names "Example scan ..." and targets "EXAMPLE.org"
        {"q": "10.0."},  # no letters: one spelling
        {"q": "示例"},
        {"q": "https://portal"},
        {"q": "acme", "status": "SUCCESS,FAILURE"},
        {"q": "acme", "sort": "-runtime"},
        {"q": "acme", "sort": "status"},
        {"q": "beta", "worker": "celery@beta", "sort": "started"},
        {"q": "acme", "task_type": "ip_task", "created_after": str(T0 + 30_000)},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_search_is_a_case_insensitive_prefix_of_name_or_target(world: tuple, params: dict) -> None:
    stack, docs = world
    want = expected(docs, **reference_params(params))
    assert want, "the case should match some tasks"
    total, seen = every_page(stack, 100, **params)
    assert total == len(want) and seen == want


@pytest.mark.parametrize(
    "params", [{"q": "acme"}, {"q": "ACME", "sort": "created"}, {"q": "e", "status": "SUCCESS"}]
)
def test_small_pages_of_broad_searches_read_in_order_and_agree(world: tuple, params: dict) -> None:
    # A search matching many tasks reads its first small pages newest (or oldest) first and
    # checks them, its later pages from its index ranges: every page agrees with the reference.
    stack, docs = world
    want = expected(docs, **params)
    assert len(want) > 100
    seen: list[str] = []
    for page in range(1, 6):  # small pages: read in order
        data = listing(stack, page=page, size=10, **params)
        assert data["total"] == len(want)
        seen += [i["celery_id"] for i in data["items"]]
    page = 2
    while len(seen) < len(want):  # the rest, 50 a page: from the ranges
        seen += [i["celery_id"] for i in listing(stack, page=page, size=50, **params)["items"]]
        page += 1
    assert seen == want


def test_search_matches_prefixes_only_and_nothing_is_nothing(world: tuple) -> None:
    stack, docs = world
    # "portal" is inside "https://Portal.acme.test/" but begins neither a name nor a target.
    assert listing(stack, q="portal") == {"total": 0, "page": 1, "size": 10, "items": []}
    assert listing(stack, q="zzz")["total"] == 0
    # A task found through both its name and its target counts once.
    both = [d for d in docs if starts(d["name"], "acme") and starts(d["target"], "acme")]
    assert both and listing(stack, q="acme")["total"] == len(expected(docs, q="acme"))
    # Blank q is no search.
    assert listing(stack, q="  ")["total"] == N


# -- statuses, worker, created range, sort -------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"status": "SUCCESS,FAILURE"},
        {"status": "FAILURE,REVOKED,RETRY", "task_type": "domain_task"},
        {"status": "SUCCESS,FAILURE", "sort": "-started"},
        {"status": "STARTED,RETRY", "sort": "started"},
        {"worker": "celery@gamma"},
        {"worker": "celery@alpha", "status": "FAILURE"},
        {"created_after": "2024-05-02T00:00:00Z", "created_before": "2024-05-02T06:00:00Z"},
        {"created_after": str(T0 + 90_000), "status": "SUCCESS"},
        {"created_before": "2024-05-01T20:00:00", "sort": "created"},
        {"sort": "created"},
        {"sort": "-started"},
        {"sort": "started"},
        {"sort": "-runtime"},
        {"sort": "runtime", "status": "SUCCESS"},
        {"sort": "status"},
        {"sort": "status", "status": "PENDING,SUCCESS"},
        {"sort": "-runtime", "status": "SUCCESS"},
        {"sort": "started", "status": "STARTED", "worker": "celery@beta"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_filters_and_orders_give_the_exact_total_and_order(world: tuple, params: dict) -> None:
    stack, docs = world
    want = expected(docs, **reference_params(params))
    assert want
    page1 = listing(stack, size=100, **params)
    assert page1["total"] == len(want)
    assert [i["celery_id"] for i in page1["items"]] == want[:100]


@pytest.mark.parametrize(
    "params",
    [{"status": "SUCCESS,FAILURE"}, {"sort": "status"}, {"status": "SUCCESS,PENDING", "sort": "-runtime"}],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_pages_of_several_statuses_cover_them_once(world: tuple, params: dict) -> None:
    stack, docs = world
    want = expected(docs, **params)
    total, seen = every_page(stack, 100, **params)
    assert total == len(want) and seen == want


def test_deep_pages_of_several_statuses_take_one_query_and_agree(world: tuple) -> None:
    # Past MERGE_LIMIT (1,000) the groups are not merged: one $in query gives the same order.
    stack, docs = world
    want = expected(docs, status="SUCCESS,FAILURE,STARTED")
    data = listing(stack, status="SUCCESS,FAILURE,STARTED", page=11, size=100)
    assert [i["celery_id"] for i in data["items"]] == want[1000:1100]


def test_pages_by_status_go_as_deep_as_the_depth_limit(world: tuple) -> None:
    # Without a status, worker and the started/runtime orders are asked one status at a time.
    stack, docs = world
    want = expected(docs, sort="-started")
    data = listing(stack, sort="-started", page=20, size=100)
    assert data["total"] == N and [i["celery_id"] for i in data["items"]] == want[1900:2000]
    want = expected(docs, worker="celery@alpha")
    total, seen = every_page(stack, 100, worker="celery@alpha")
    assert total == len(want) < 2000 and seen == want


def test_the_spec_list_is_unchanged(world: tuple) -> None:
    stack, docs = world
    data = listing(stack)
    assert (data["total"], data["page"], data["size"]) == (N, 1, 10)
    assert [i["celery_id"] for i in data["items"]] == expected(docs)[:10]
    one = listing(stack, status="FAILURE", task_type="ip_task", size=5)
    assert one["total"] == len(expected(docs, status="FAILURE", task_type="ip_task"))


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("status=SUCCESS,DONE", "status", "unknown status 'DONE'"),
        ("status=,", "status", "must name a status"),
        ("sort=name", "sort", "must be one of"),
        ("sort=-status", "sort", "must be one of"),
        ("created_after=yesterday", "created_after", "ISO 8601"),
        ("created_before=-1", "created_before", "ISO 8601"),
        ("created_after=1714564800&created_before=1714564800", "created_before", "later than"),
        ("q=" + "x" * 101, "q", "at most 100"),
        ("worker=", "worker", "must not be empty"),
        ("q=acme&page=200&size=100", "page", "first 10000"),
        ("status=SUCCESS&status=FAILURE", "status", "must be given once"),
        ("sort=-runtime&page=21&size=100", "page", "first 2000"),
        ("worker=celery@beta&page=201", "page", "first 2000"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(world: tuple, query: str, field: str, reason: str) -> None:
    stack, _ = world
    resp = stack.request("GET", f"/api/celery_task/?{query}")
    assert resp.status == 400 and resp.code == 400, resp
    assert resp.data["field"] == field and reason in resp.data["reason"], resp.data


def test_unknown_parameters_are_ignored_as_before(world: tuple) -> None:
    stack, _ = world
    assert listing(stack, colour="blue", size=1)["total"] == N
