"""Client-facing shapes of task documents."""

from __future__ import annotations

import datetime as dt
import json

from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.documents import detail, iso, list_item, list_item_of_detail


def test_iso_is_utc_with_milliseconds() -> None:
    assert iso(1689000000.0) == "2023-07-10T14:40:00.000Z"
    assert iso(1689000000.1234) == "2023-07-10T14:40:00.123Z"
    assert iso(None) is None and iso("x") is None and iso(True) is None


def test_list_item_and_detail_hide_bookkeeping() -> None:
    oid = ObjectId()
    doc = {
        "_id": oid,
        "celery_id": "c",
        "status": "SUCCESS",
        "name": "n",
        "_m": {"x": 1},
        "data": {"secret": 1},
        "outcome": {"result": "r", "runtime": 1.5},
        "start_time": 1.0,
        "end_time": 2.0,
        "created_time": 0.5,
    }
    item = list_item(doc)
    assert item["_id"] == str(oid) and item["task_id"] == str(oid)
    assert "_m" not in item and "data" not in item and "outcome" not in item
    full = detail(doc)
    assert full["task_id"] == str(oid) and full["result"] == "r" and full["runtime"] == 1.5
    assert full["start_time"] == "1970-01-01T00:00:01.000Z"
    assert "_m" not in full and "data" not in full


def _iso_by_datetime(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@settings(max_examples=2000, deadline=None)
@given(
    ts=st.one_of(
        st.floats(min_value=-6e10, max_value=2.5e11, allow_nan=False),
        st.integers(min_value=0, max_value=4_102_444_800),
        # Just below whole seconds and milliseconds, where rounding carries over.
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s - 0.0000004),
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.9995),
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.9999995),
    )
)
def test_iso_matches_datetime_for_any_time(ts: float) -> None:
    assert iso(ts) == _iso_by_datetime(ts)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8))
stored_docs = st.fixed_dictionaries(
    {"_id": st.builds(ObjectId), "celery_id": st.text(min_size=1, max_size=8)},
    optional={
        "status": st.sampled_from(["PENDING", "STARTED", "SUCCESS", "REVOKED"]),
        "name": scalars,
        "target": scalars,
        "type": scalars,
        "task_tag": scalars,
        "task_type": scalars,
        "worker": scalars,
        "start_time": st.one_of(st.none(), st.floats(0, 4e9)),
        "end_time": st.one_of(st.none(), st.floats(0, 4e9)),
        "created_time": st.floats(0, 4e9),
        "progress": st.one_of(
            st.none(), st.just({}), st.dictionaries(st.text(max_size=4), scalars, max_size=3)
        ),
        "outcome": st.dictionaries(st.sampled_from(["result", "runtime"]), scalars, max_size=2),
        "rev": st.integers(0, 2**40),
    },
)


@settings(max_examples=500, deadline=None)
@given(stored_docs)
def test_a_list_item_made_from_a_detail_is_the_list_item_of_the_document(doc: dict[str, object]) -> None:
    """What the lookup cache holds (a detail, maybe via the feed's JSON) lists as MongoDB's copy does."""
    expected = json.dumps(list_item(doc), default=str)
    assert json.dumps(list_item_of_detail(detail(doc)), default=str) == expected
    through_feed = json.loads(json.dumps(detail(doc), default=str))
    assert json.dumps(list_item_of_detail(through_feed), default=str) == expected
