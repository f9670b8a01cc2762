"""Client-facing shapes of task documents."""

from __future__ import annotations

import datetime as dt

from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.documents import detail, iso, list_item


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
