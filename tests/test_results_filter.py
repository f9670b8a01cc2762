"""Vuln results filter by severity; the filter is refused for other kinds and bad values."""

from __future__ import annotations

import pytest

from controlplane.store.results import RESULT_COLLECTIONS, ResultWriter
from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_vuln_results_filter_by_severity(stack: Stack) -> None:
    cid = stack.create("sleep_task", {"name": "vulns", "seconds": 0})
    task_id = stack.detail(cid)["task_id"]
    writer = ResultWriter(stack.db, task_id, ("vuln",))
    writer.ensure_indexes()
    found = [
        {"target": "http://a.example", "poc_id": f"t{i}", "severity": sev}
        for i, sev in enumerate(["info", "high", "critical", "high", "low"])
    ]
    assert writer.insert("vuln", found) == 5
    keys = [info["key"] for info in stack.db["vuln"].index_information().values()]
    assert [("task_id", 1), ("severity", 1)] in keys, keys
    base = f"/api/celery_task/{cid}/results/?kind=vuln"

    page = stack.request("GET", f"{base}&severity=high,critical").data
    assert page["total"] == 3 and sorted(v["severity"] for v in page["items"]) == ["critical", "high", "high"]
    assert stack.request("GET", base).data["total"] == 5

    bad = stack.request("GET", f"{base}&severity=urgent")
    assert bad.status == 400 and bad.data["field"] == "severity", bad
    other = stack.request("GET", f"/api/celery_task/{cid}/results/?kind=site&severity=high")
    assert other.status == 400 and other.data["field"] == "severity", other
    assert "severity" in RESULT_COLLECTIONS["vuln"].filters
