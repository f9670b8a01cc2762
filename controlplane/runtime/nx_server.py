"""The embedded MongoDB-wire server: nx-27017, run with six changes of ours.

``python -m controlplane.runtime.nx_server <nx-27017 arguments>`` is what
:func:`controlplane.runtime.embedded.start_mongo` runs.  It is nx-27017 as published,
except:

* **Quiet logs.**  nx-27017 logs every generic command at INFO, twice (its log
  file and stderr): the files grow without bound and formatting the lines costs
  more CPU than many commands.  Its logger is set to WARNING.
* **One SQLite transaction per write command.**  nx-27017 runs its SQLite
  connection in autocommit mode and writes a multi-document ``insert``,
  ``update`` or ``delete`` one statement, hence one commit, at a time; a commit
  costs far more than the statement (measured on this machine: 103 µs per
  insert in autocommit, 15 µs inside one transaction).  Each write command now
  runs inside one ``BEGIN … COMMIT``, under nx-27017's own per-database lock.
  What a client sees does not change: a statement that fails (a duplicate key)
  is rolled back alone, exactly as before, and the others commit together; a
  command that raises rolls back what it wrote, and nx-27017 answers it with an
  error as before.  A client's own transaction (a session with
  ``startTransaction``) is left alone.
* **No formatting of unlogged debug lines.**  ``handle_insert`` builds a debug
  line from the whole message (every document's ``repr``) before the logger
  drops it; that was about 7% of the server's time under event load.  The
  message's sections now format as a short placeholder; nothing else reads
  their text.
* **A quicker walk for ObjectId conversion.**  Every written document and
  every update's query and change go through nx-27017's recursive conversion
  of BSON ObjectIds to its own (16% of its time under event load, most of it
  type checks on plain strings and numbers).  :func:`convert_objectids` gives
  the same result, handing anything but plain dicts, lists and scalars to
  nx-27017's own function.
* **Leaner single-document writes** (neosqlite, under nx-27017).  An insert
  deep-copied the document, then rebuilt it again to wrap ``bytes``, then
  asked SQLite to re-parse the JSON it had just serialized (``json_valid``);
  a replacement read the matched document's whole JSON back only to learn its
  row id.  :func:`lean_insert` builds the one copy the ``bytes`` wrapping
  makes anyway (with :func:`wrap_bytes`, a quicker walk giving neosqlite's
  result) and lets the serializer refuse what ``json_valid`` would (NaN
  and infinities, the only invalid JSON Python's encoder writes); anything
  unusual (a document that is not a plain dict, such values) goes to the
  original method, errors included.  :func:`lean_replace_one` selects the row
  id alone.  The rows written are the same.

* **One thread per connection** (nx-27017's own ``--threaded`` server, which
  :func:`main` always asks for).  Its default asyncio server reads each message
  on its event loop, then hands the command to a thread pool with
  ``asyncio.to_thread`` and waits for the loop to be woken with the answer: two
  thread hand-offs per command, a third of a ``ping``'s round trip (measured on
  this machine: 0.38 → 0.25 ms for a ``ping``, 0.57 → 0.43 ms for a lookup by
  ``_id``).  The threaded server reads, runs and answers on the connection's own
  thread.  The handler sees nothing new: the asyncio server already calls it
  from several pool threads at once, and writes stay serialized by nx-27017's
  per-database lock.  Its help calls the mode one for debugging; it is the same
  handler behind a plainer loop, and ``tests/test_nx_server.py`` runs every
  semantic test above through it.

* **A Unix socket instead of TCP** (``--unix-socket PATH``, which
  ``controlplane up`` uses).  nx-27017 has no authentication: whoever reaches
  its port reads and writes every database.  On a Unix socket inside a
  directory only its owner may enter, only that user's processes can connect
  (pymongo: ``mongodb://<percent-encoded path>``).  The threaded server's
  accept loop is the same, on an ``AF_UNIX`` socket.

If the installed nx-27017 lacks the internals these changes rely on, it runs
without them (the grouped commits with a warning): slower, never wrong.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("controlplane.runtime.nx_server")

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})


def command_name(msg: Any) -> str | None:
    """The command of an OP_MSG (the first key of its body section), or None."""
    if not isinstance(msg, dict):
        return None
    for section_type, doc in msg.get("sections") or ():
        if section_type == "body" and isinstance(doc, dict) and doc:
            return str(next(iter(doc)))
    return None


class QuietSections(list):  # type: ignore[type-arg]
    """A message's sections that format (``str``, ``repr``, f-strings) as a placeholder."""

    def __repr__(self) -> str:
        return f"<{len(self)} sections>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def _quiet_sections(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(msg, dict) and type(msg.get("sections")) is list:
            msg["sections"] = QuietSections(msg["sections"])
        return original(self, msg, *args, **kwargs)

    return handle


_PLAIN = frozenset({str, int, float, bool, type(None), bytes})


def rebuild(doc: Any, keep: frozenset[Any], other: Callable[[Any], Any]) -> Any:
    """A walk that rebuilds exact dicts and lists, keeps values of the ``keep`` types, and
    hands every other value to ``other``.

    With ``other`` a recursive converter that does the same to dicts and lists and
    leaves ``keep``'s values alone, the result is ``other(doc)``'s, without its type
    checks on every plain string and number.
    """
    kind = type(doc)
    if kind is dict:
        return {k: v if type(v) in keep else rebuild(v, keep, other) for k, v in doc.items()}
    if kind is list:
        return [v if type(v) in keep else rebuild(v, keep, other) for v in doc]
    if kind in keep:
        return doc
    return other(doc)


def convert_objectids(doc: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert(doc)`` (nx-27017's ObjectId conversion), skipping its checks on plain values.

    ObjectIds, subclasses such as ``Int64`` and decimals go to ``convert``.
    """
    return rebuild(doc, _PLAIN, convert)


_NOT_BYTES = frozenset({str, int, float, bool, type(None)})


def wrap_bytes(doc: Any, wrap: Callable[[Any], Any]) -> Any:
    """``wrap(doc)`` (neosqlite's ``bytes`` → ``Binary`` walk), skipping its checks on plain values."""
    return rebuild(doc, _NOT_BYTES, wrap)


def lean_insert(original: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's ``_internal_insert`` without its second copy and JSON re-validation."""
    from neosqlite.collection.json_helpers import neosqlite_json_dumps
    from neosqlite.collection.query_helper.utils import _convert_bytes_to_binary
    from neosqlite.objectid import ObjectId
    from neosqlite.sql_utils import quote_table_name

    def insert(self: Any, document: Any) -> Any:
        if type(document) is not dict:
            return original(self, document)
        given = document.get("_id")
        oid = given if given is not None else ObjectId()
        # A new dict (lists and dicts rebuilt), the _id where neosqlite puts it, bytes wrapped.
        row = wrap_bytes({**document, "_id": oid}, _convert_bytes_to_binary)
        try:
            text = neosqlite_json_dumps(row, allow_nan=False)
        except ValueError:  # NaN or an infinity: the original refuses it in its own words
            return original(self, document)
        table = quote_table_name(self.collection.name)
        sql = f"INSERT INTO {table}(data, _id) VALUES (?, ?)"  # noqa: S608 - a quoted table name
        cursor = self.collection.db.execute(sql, (text, str(oid)))
        if cursor.lastrowid is None:
            raise sqlite3.Error("Failed to get last row id.")
        if "_id" not in document:
            document["_id"] = oid
        return oid

    return insert


def lean_replace_one(original: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's ``replace_one`` reading only the matched row's id (plain cases; others unchanged)."""
    from neosqlite.collection.json_helpers import neosqlite_json_dumps
    from neosqlite.collection.type_utils import validate_session
    from neosqlite.results import UpdateResult
    from neosqlite.sql_utils import quote_table_name

    def replace_one(
        self: Any, filter: Any, replacement: Any, upsert: bool = False, session: Any = None
    ) -> Any:
        if type(filter) is not dict or type(replacement) is not dict or "_id" not in replacement:
            return original(self, filter, replacement, upsert=upsert, session=session)
        validate_session(session, self.collection._database)
        where, params = self.sql_translator.translate_match(self.helpers._normalize_id_query(filter))
        if not where:
            return original(self, filter, replacement, upsert=upsert, session=session)
        table = quote_table_name(self.collection.name)
        # The table name is quoted; the WHERE clause is neosqlite's own, its values bound parameters.
        select = f"SELECT id FROM {table} {where} LIMIT 1"  # noqa: S608
        row = self.collection.db.execute(select, params).fetchone()
        if row is None:  # no match: the original decides (an upsert inserts)
            return original(self, filter, replacement, upsert=upsert, session=session)
        update = f"UPDATE {table} SET data = ? WHERE id = ?"  # noqa: S608
        self.collection.db.execute(update, (neosqlite_json_dumps(dict(replacement)), row[0]))
        return UpdateResult(matched_count=1, modified_count=1, upserted_id=None)

    return replace_one


def _patch_writes() -> bool:
    """Apply :func:`lean_insert` and :func:`lean_replace_one`; False if neosqlite's internals differ."""
    try:
        from neosqlite.collection.query_engine import crud_operations as engine
        from neosqlite.collection.query_helper import crud_operations as helper
    except ImportError:
        return False
    inserts: Any = getattr(helper, "CRUDOperationsMixin", None)
    replaces: Any = getattr(engine, "CRUDOperationsMixin", None)
    if not hasattr(inserts, "_internal_insert") or not hasattr(replaces, "replace_one"):
        return False
    try:
        insert = lean_insert(inserts._internal_insert)
        replace = lean_replace_one(replaces.replace_one)
    except ImportError:
        return False
    inserts._internal_insert = insert
    replaces.replace_one = replace
    return True


def _in_one_transaction(
    original: Callable[..., Any], db_name_of: Callable[[Any], str], only_writes: bool
) -> Callable[..., Any]:
    def handle(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        if only_writes and command_name(msg) not in WRITE_COMMANDS:
            return original(self, msg, *args, **kwargs)
        db_name = db_name_of(msg)
        with self._lock_for(db_name):
            conn: sqlite3.Connection = self.get_database(db_name).db
            if conn.in_transaction:  # a client transaction: not ours to group
                return original(self, msg, *args, **kwargs)
            conn.execute("BEGIN")
            try:
                result = original(self, msg, *args, **kwargs)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if conn.in_transaction:
                conn.execute("COMMIT")
            return result

    return handle


def patch_handler() -> bool:
    """Apply this module's changes to nx-27017's handler; False if its internals differ."""
    try:
        from nx_27017 import handler as nx_handler
    except ImportError:
        return False
    cls = getattr(nx_handler, "NeoSQLiteHandler", None)
    db_name_of = getattr(nx_handler, "_msg_db_name", None)
    needed = ("handle_insert", "handle_command", "_lock_for", "get_database")
    if cls is None or db_name_of is None or not all(hasattr(cls, name) for name in needed):
        log.warning("nx-27017 internals changed: write commands run without grouped commits")
        return False
    if getattr(cls, "_controlplane_patched", False):
        return True
    cls.handle_insert = _quiet_sections(_in_one_transaction(cls.handle_insert, db_name_of, only_writes=False))
    cls.handle_command = _in_one_transaction(cls.handle_command, db_name_of, only_writes=True)
    from nx_27017 import utils as nx_utils

    nx_convert = getattr(nx_utils, "convert_bson_to_neo_objectids", None)
    if nx_convert is not None and hasattr(cls, "_convert_objectids"):
        cls._convert_objectids = lambda self, doc: convert_objectids(doc, nx_convert)
    if not _patch_writes():
        log.warning("neosqlite internals changed: single-document writes run unchanged")
    cls._controlplane_patched = True
    return True


def serve_unix(path: str, handler: Any, client: Callable[[socket.socket, Any], None]) -> None:
    """nx-27017's threaded accept loop on a Unix socket at ``path`` (owner-only, replaced if stale)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(128)
    log.info("listening on %s", path)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                if server.fileno() == -1:
                    break
                continue
            threading.Thread(target=client, args=(conn, handler), daemon=True).start()
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _listen_on_unix_socket(path: str) -> None:
    """Make nx-27017's foreground runner serve on ``path`` instead of its host and port."""
    from nx_27017 import daemon as nx_daemon
    from nx_27017.server import handle_client_threaded

    def run(host: str, port: int, handler: Any, use_threading: bool = True) -> None:
        serve_unix(path, handler, handle_client_threaded)

    nx_daemon.run_server_threaded = run  # type: ignore[assignment]


def _take_option(args: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` (or ``name=VALUE``) from ``args``; return the value."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run nx-27017 with ``argv`` (its own command line, plus ``--unix-socket PATH``), changed
    as the module says."""
    from nx_27017.nx_27017 import main as nx_main

    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    patch_handler()
    args = list(sys.argv[1:] if argv is None else argv)
    unix_socket = _take_option(args, "--unix-socket")
    if unix_socket:
        _listen_on_unix_socket(unix_socket)
    if "--threaded" not in args:
        args.append("--threaded")
    sys.argv = ["nx-27017", *args]
    return int(nx_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
