"""The embedded server as we run it: nx-27017 with the changes of :mod:`controlplane.runtime.nx_server`."""

from __future__ import annotations

import copy
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from bson import SON, Int64, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import MongoClient, UpdateOne
from pymongo.errors import BulkWriteError

from controlplane.runtime import embedded
from controlplane.runtime.nx_server import (
    QuietSections,
    _patch_writes,
    _quiet_sections,
    command_name,
    convert_objectids,
    patch_handler,
    wrap_bytes,
)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[MongoClient, Path, int]]:
    port = embedded.free_port()
    proc = embedded.start_mongo(port, tmp_path)
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
    try:
        yield client, tmp_path, port
    finally:
        client.close()
        embedded.stop(proc)


def test_the_installed_nx_27017_takes_the_patch() -> None:
    # If nx-27017 changed the internals the grouped commits rely on, this fails loudly
    # (the server itself would run unpatched, slower).
    assert patch_handler() is True


def test_inserts_reach_nx_27017_with_sections_that_format_as_a_placeholder() -> None:
    from nx_27017.handler import NeoSQLiteHandler

    assert patch_handler() is True
    assert "_quiet_sections" in NeoSQLiteHandler.handle_insert.__qualname__
    seen: list[object] = []
    docs = [{"k": i, "pad": "x" * 1000} for i in range(50)]
    msg = {"sections": [("body", {"insert": "t", "$db": "x"}), ("payload_docs", docs)]}
    _quiet_sections(lambda self, m: seen.append(m["sections"]))(None, msg)
    sections = seen[0]
    assert isinstance(sections, QuietSections) and list(sections) == msg["sections"]
    assert f"{sections}" == str(sections) == repr(sections) == "<2 sections>"


def test_command_name_reads_the_body_section() -> None:
    msg = {"sections": [("payload", {"documents": []}), ("body", {"update": "tasks", "$db": "x"})]}
    assert command_name(msg) == "update"
    assert command_name({"sections": []}) is None and command_name("junk") is None


def test_an_unordered_insert_keeps_every_document_but_the_duplicate(
    server: tuple[MongoClient, Path, int],
) -> None:
    client, _, _ = server
    tasks = client.t.tasks
    tasks.create_index("k", unique=True)
    tasks.insert_one({"k": 2})
    with pytest.raises(BulkWriteError) as err:
        tasks.insert_many([{"k": 1}, {"k": 2}, {"k": 3}], ordered=False)
    assert [e["index"] for e in err.value.details["writeErrors"]] == [1]
    assert sorted(d["k"] for d in tasks.find({}, {"k": 1})) == [1, 2, 3]


def test_an_ordered_insert_stops_at_the_duplicate_and_keeps_what_came_before(
    server: tuple[MongoClient, Path, int],
) -> None:
    client, _, _ = server
    tasks = client.t.tasks
    tasks.create_index("k", unique=True)
    tasks.insert_one({"k": 2})
    with pytest.raises(BulkWriteError):
        tasks.insert_many([{"k": 1}, {"k": 2}, {"k": 3}], ordered=True)
    assert sorted(d["k"] for d in tasks.find({}, {"k": 1})) == [1, 2]


def test_a_bulk_update_applies_every_statement_that_matches(server: tuple[MongoClient, Path, int]) -> None:
    client, _, _ = server
    tasks = client.t.tasks
    tasks.insert_many([{"_id": i, "rev": 1} for i in range(50)])
    ops = [UpdateOne({"_id": i, "rev": 1 if i % 5 else 99}, {"$set": {"rev": 2}}) for i in range(50)]
    result = tasks.bulk_write(ops, ordered=False)
    assert result.matched_count == 40 and result.modified_count == 40
    assert tasks.count_documents({"rev": 2}) == 40 and tasks.count_documents({"rev": 1}) == 10


def test_written_documents_survive_a_restart(tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(30)]
    port = embedded.free_port()
    proc = embedded.start_mongo(port, tmp_path)
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
    try:
        client.t.tasks.insert_many([{"_id": i} for i in ids])
        client.t.tasks.update_many({}, {"$set": {"done": True}})
        client.t.counters.find_one_and_update({"_id": "rev"}, {"$inc": {"value": 5}}, upsert=True)
    finally:
        client.close()
        embedded.stop(proc)
    port = embedded.free_port()
    proc = embedded.start_mongo(port, tmp_path)  # the same files, a new server
    again: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
    try:
        assert sorted(d["_id"] for d in again.t.tasks.find({"done": True})) == sorted(ids)
        counter = again.t.counters.find_one({"_id": "rev"})
        assert counter is not None and counter["value"] == 5
    finally:
        again.close()
        embedded.stop(proc)


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_each_connection_is_served_on_its_own_thread_that_ends_with_it(tmp_path: Path) -> None:
    # The asyncio server nx-27017 runs by default would start no thread for a connection
    # that sends nothing; the threaded one we ask for starts one per connection.
    port = embedded.free_port()
    proc = embedded.start_mongo(port, tmp_path)
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
    sockets: list[socket.socket] = []
    try:
        server = psutil.Process(proc.pid)
        client.admin.command("ping")
        idle = server.num_threads()
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        assert _wait_for(lambda: server.num_threads() >= idle + 6), (idle, server.num_threads())
        # Six silent connections hold six threads, and other clients are still answered.
        client.t.tasks.insert_one({"_id": "k", "v": 1})
        assert client.t.tasks.find_one({"_id": "k"}) == {"_id": "k", "v": 1}
        for s in sockets:
            s.close()
        assert _wait_for(lambda: server.num_threads() <= idle), (idle, server.num_threads())
    finally:
        for s in sockets:
            s.close()
        client.close()
        embedded.stop(proc)


def test_commands_are_not_logged_one_by_one(server: tuple[MongoClient, Path, int]) -> None:
    client, data_dir, _ = server
    log = data_dir / "nx-27017.log"
    before = log.stat().st_size if log.exists() else 0
    for _ in range(200):
        client.t.counters.find_one_and_update({"_id": "rev"}, {"$inc": {"value": 1}}, upsert=True)
        client.admin.command("ping")
    after = log.stat().st_size if log.exists() else 0
    assert after - before < 2000, f"the log grew by {after - before} bytes for 400 commands"


def _typed(value: object) -> object:
    """A value with every container and scalar tagged by its exact type (for exact comparison)."""
    if isinstance(value, dict):
        return (type(value).__name__, {k: _typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=4),
    st.builds(ObjectId),
    st.builds(Int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda i: SON([("k", i)]), st.integers()),
)
_docs = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
)


def _originals() -> dict[str, tuple[Any, Any]]:
    from neosqlite.collection.query_helper.utils import _convert_bytes_to_binary
    from nx_27017.utils import convert_bson_to_neo_objectids

    return {
        "objectids": (convert_objectids, convert_bson_to_neo_objectids),
        "bytes": (wrap_bytes, _convert_bytes_to_binary),
    }


@pytest.mark.parametrize("walk", ["objectids", "bytes"])
@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=4), _docs, max_size=5))
def test_each_quicker_walk_gives_what_the_original_gives(walk: str, doc: dict[str, object]) -> None:
    ours, original = _originals()[walk]
    assert _typed(ours(copy.deepcopy(doc), original)) == _typed(original(copy.deepcopy(doc)))


def test_the_handler_converts_with_the_quicker_walk() -> None:
    from neosqlite.objectid import ObjectId as NeoObjectId
    from nx_27017.handler import NeoSQLiteHandler

    assert patch_handler() is True
    oid = ObjectId()
    out = NeoSQLiteHandler._convert_objectids(None, {"_id": oid, "a": [oid, {"b": 1}]})  # type: ignore[arg-type]
    assert type(out["_id"]) is NeoObjectId and type(out["a"][0]) is NeoObjectId and out["a"][1] == {"b": 1}
    assert "convert_objectids" in NeoSQLiteHandler._convert_objectids.__code__.co_names


def test_neosqlite_takes_the_lean_writes() -> None:
    from neosqlite.collection.query_engine.crud_operations import CRUDOperationsMixin as Engine
    from neosqlite.collection.query_helper.crud_operations import CRUDOperationsMixin as Helper

    assert _patch_writes() is True
    assert Helper._internal_insert.__qualname__.startswith("lean_insert")
    assert Engine.replace_one.__qualname__.startswith("lean_replace_one")


def test_lean_inserts_store_what_was_sent(server: tuple[MongoClient, Path, int]) -> None:
    client, _, _ = server
    coll = client.lean.docs
    given = ObjectId()
    docs = [
        {"_id": given, "blob": b"\x00\x01", "nested": {"list": [1, "two", {"three": 3.5}], "none": None}},
        {"flag": True, "big": Int64(2**40), "text": "\u00e9t\u00e9 \U0001f600"},
    ]
    result = coll.insert_many(copy.deepcopy(docs))
    assert result.inserted_ids[0] == given and isinstance(result.inserted_ids[1], ObjectId)
    first = coll.find_one({"_id": given})
    assert first is not None and first["blob"] == b"\x00\x01" and first["nested"] == docs[0]["nested"]
    second = coll.find_one({"_id": result.inserted_ids[1]})
    assert second is not None and {k: second[k] for k in ("flag", "big", "text")} == docs[1]
    with pytest.raises(BulkWriteError):  # the same _id again: refused as before
        coll.insert_many([{"_id": given}])
    coll.insert_one({"_id": b"raw", "v": 1})  # a bytes _id is wrapped like every other bytes value
    assert coll.find_one({"v": 1}) is not None


def test_a_document_with_nan_is_refused_as_nx_27017_refuses_it(server: tuple[MongoClient, Path, int]) -> None:
    client, _, _ = server
    coll = client.lean.nan
    with pytest.raises(BulkWriteError) as caught:
        coll.insert_many([{"k": 1, "x": float("nan")}, {"k": 2}], ordered=False)
    errors = caught.value.details["writeErrors"]
    assert [e["index"] for e in errors] == [0] and "Invalid JSON" in errors[0]["errmsg"]
    assert [d["k"] for d in coll.find({}, {"k": 1})] == [2]


def test_lean_replacements_replace_only_what_matches(server: tuple[MongoClient, Path, int]) -> None:
    client, _, _ = server
    coll = client.lean.replace
    oid = ObjectId()
    coll.insert_one({"_id": oid, "rev": 1, "status": "STARTED", "gone": "x"})
    done = coll.replace_one({"_id": oid, "rev": {"$lt": 2}}, {"_id": oid, "rev": 2, "status": "SUCCESS"})
    assert (done.matched_count, done.modified_count) == (1, 1)
    assert coll.find_one({"_id": oid}) == {"_id": oid, "rev": 2, "status": "SUCCESS"}
    stale = coll.replace_one({"_id": oid, "rev": {"$lt": 2}}, {"_id": oid, "rev": 2, "status": "FAILURE"})
    assert stale.matched_count == 0 and coll.find_one({"_id": oid})["status"] == "SUCCESS"  # type: ignore[index]
    other = ObjectId()
    upserted = coll.replace_one({"_id": other}, {"_id": other, "rev": 1}, upsert=True)
    assert upserted.upserted_id == other and coll.find_one({"_id": other}) == {"_id": other, "rev": 1}
    # Without an _id in the replacement the original method runs: the document keeps its _id.
    coll.replace_one({"_id": oid}, {"rev": 3})
    assert coll.find_one({"_id": oid}) == {"_id": oid, "rev": 3}
