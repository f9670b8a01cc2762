"""The embedded MongoDB-wire server: nx-27017, run with four changes of ours.

``python -m controlplane.nx_server <nx-27017 arguments>`` is what
:func:`controlplane.embedded.start_mongo` runs.  It is nx-27017 as published,
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

If the installed nx-27017 lacks the internals these changes rely on, it runs
without them (the grouped commits with a warning): slower, never wrong.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("controlplane.nx_server")

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


def convert_objectids(doc: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert(doc)`` (nx-27017's ObjectId conversion), skipping its checks on plain values.

    Exact dicts and lists are rebuilt here and plain scalars kept as they are;
    every other value (ObjectIds, subclasses such as ``Int64``, decimals) is
    passed to ``convert``, so the result is the one ``convert`` would give.
    """
    kind = type(doc)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else convert_objectids(v, convert) for k, v in doc.items()}
    if kind is list:
        return [v if type(v) in _PLAIN else convert_objectids(v, convert) for v in doc]
    if kind in _PLAIN:
        return doc
    return convert(doc)


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
    cls._controlplane_patched = True
    return True


def main(argv: list[str] | None = None) -> int:
    """Run nx-27017 with ``argv`` (its own command line), changed as the module says."""
    from nx_27017.nx_27017 import main as nx_main

    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    patch_handler()
    sys.argv = ["nx-27017", *(sys.argv[1:] if argv is None else argv)]
    return int(nx_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
