"""Listing: exact totals, filters alone and combined, newest first, pagination bounds."""

from __future__ import annotations

import pytest

from tests.stack import Stack, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def populated(stack: Stack) -> dict[str, list[str]]:
    """13 sleep tasks (SUCCESS) and 7 fail tasks (FAILURE), created in a known order."""
    created: dict[str, list[str]] = {"sleep_task": [], "fail_task": []}
    order: list[str] = []
    for i in range(20):
        kind = "fail_task" if i % 3 == 2 else "sleep_task"
        cid = stack.create(kind, {"name": f"t{i}", "seconds": 0})
        created[kind].append(cid)
        order.append(cid)
    for cid in order:
        stack.wait_status(cid, "SUCCESS", "FAILURE")
    created["order"] = order
    return created


def list_(stack: Stack, query: str) -> dict:
    resp = stack.request("GET", f"/api/celery_task/{query}")
    assert resp.status == 200 and resp.code == 200, resp
    return dict(resp.data)


def test_default_page_is_ten_newest_first_with_exact_total(stack: Stack, populated: dict) -> None:
    data = list_(stack, "")
    assert (data["total"], data["page"], data["size"]) == (20, 1, 10)
    assert [i["celery_id"] for i in data["items"]] == populated["order"][::-1][:10]
    item = data["items"][0]
    for key in (
        "_id",
        "name",
        "target",
        "status",
        "type",
        "task_tag",
        "task_type",
        "start_time",
        "end_time",
        "celery_id",
    ):
        assert key in item
    assert "_m" not in item and "data" not in item


def test_pages_cover_everything_once(stack: Stack, populated: dict) -> None:
    seen = []
    for page in (1, 2, 3):
        data = list_(stack, f"?page={page}&size=7")
        assert data["total"] == 20
        seen.extend(i["celery_id"] for i in data["items"])
    assert seen == populated["order"][::-1]
    assert list_(stack, "?page=4&size=7")["items"] == []
    assert len(list_(stack, "?size=100")["items"]) == 20


@pytest.mark.parametrize(
    ("query", "expected_kind", "status"),
    [
        ("?task_type=fail_task", "fail_task", "FAILURE"),
        ("?status=SUCCESS", "sleep_task", "SUCCESS"),
        ("?status=FAILURE&task_type=fail_task", "fail_task", "FAILURE"),
    ],
)
def test_filters_alone_and_combined(
    stack: Stack, populated: dict, query: str, expected_kind: str, status: str
) -> None:
    data = list_(stack, query + "&size=100")
    expected = populated[expected_kind][::-1]
    assert data["total"] == len(expected)
    assert [i["celery_id"] for i in data["items"]] == expected
    assert {i["status"] for i in data["items"]} == {status}


@pytest.mark.parametrize("query", ["?status=SUCCESS", "?task_type=sleep_task&status=SUCCESS"])
def test_filtered_pages_cover_the_matching_tasks_once_newest_first(
    stack: Stack, populated: dict, query: str
) -> None:
    # Filtered pages past the first take the aggregation path (see AsyncTaskStore.page).
    seen = []
    for page in (1, 2, 3, 4, 5):
        data = list_(stack, f"{query}&page={page}&size=3")
        assert data["total"] == len(populated["sleep_task"]) == 14
        seen.extend(i["celery_id"] for i in data["items"])
        assert all("data" not in i and "_m" not in i and i["status"] == "SUCCESS" for i in data["items"])
    assert seen == populated["sleep_task"][::-1]
    assert list_(stack, f"{query}&page=6&size=3")["items"] == []


def test_filters_that_match_nothing(stack: Stack, populated: dict) -> None:
    data = list_(stack, "?status=SUCCESS&task_type=fail_task")
    assert data["total"] == 0 and data["items"] == []
    data = list_(stack, "?status=PENDING")
    assert data["total"] == 0


def test_celery_id_filter(stack: Stack, populated: dict) -> None:
    cid = populated["fail_task"][0]
    data = list_(stack, f"?celery_id={cid}")
    assert data["total"] == 1 and data["items"][0]["celery_id"] == cid
    assert list_(stack, f"?celery_id={cid}&status=SUCCESS")["total"] == 0
    upper = list_(stack, f"?celery_id={cid.upper()}")
    assert upper["total"] == 1
    both = list_(stack, f"?celery_id={cid}&status=FAILURE&task_type=fail_task")
    assert both["total"] == 1 and [i["celery_id"] for i in both["items"]] == [cid]
    assert list_(stack, f"?celery_id={cid}&task_type=sleep_task") == {
        "total": 0,
        "page": 1,
        "size": 10,
        "items": [],
    }
    second = list_(stack, f"?celery_id={cid}&page=2")
    assert second["total"] == 1 and second["items"] == []
    assert list_(stack, "?celery_id=00000000-0000-4000-8000-000000000000")["total"] == 0


def test_operator_shaped_values_are_plain_strings(stack: Stack, populated: dict) -> None:
    resp = stack.request("GET", '/api/celery_task/?status={"$ne":null}')
    assert resp.status == 400 and resp.data["field"] == "status"


def test_always_http_200_keeps_codes(tmp_path_factory: pytest.TempPathFactory, mongo_server: str) -> None:
    from tests.conftest import make_stack

    legacy = make_stack(
        tmp_path_factory.mktemp("legacy"), mongo_server, extra_config={"api": {"always_http_200": True}}
    )
    try:
        legacy.start_api()
        resp = legacy.request("GET", "/api/celery_task/?page=0")
        assert resp.status == 200 and resp.code == 400
        resp = wait_for(
            lambda: legacy.request("GET", "/api/celery_task/00000000-0000-4000-8000-000000000000/")
        )
        assert resp.status == 200 and resp.code == 102
    finally:
        legacy.close()


def test_several_statuses_as_the_feed_takes_them(stack: Stack, populated: dict) -> None:
    data = list_(stack, "?status=SUCCESS,FAILURE&size=100")
    assert data["total"] == 20 and [i["celery_id"] for i in data["items"]] == populated["order"][::-1]
    spaced = list_(stack, "?status=FAILURE,%20PENDING&size=100")
    assert [i["celery_id"] for i in spaced["items"]] == populated["fail_task"][::-1]
    pages = [list_(stack, f"?status=SUCCESS,FAILURE&page={p}&size=7")["items"] for p in (1, 2, 3)]
    assert [i["celery_id"] for page in pages for i in page] == populated["order"][::-1]
    resp = stack.request("GET", "/api/celery_task/?status=SUCCESS,BOGUS")
    assert resp.status == 400 and resp.data["field"] == "status" and "'BOGUS'" in resp.data["reason"]
