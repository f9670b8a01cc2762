"""The ``ip`` result documents of a recon run, written while ports are found."""

from __future__ import annotations

from typing import Any

from pymongo import UpdateOne

from controlplane.store.results import ResultWriter
from workers.recon.control import Batcher
from workers.recon.portscan import PortInfo

RESULT_BATCH = 500
RESULT_INTERVAL = 1.0
"""Results go to the store in batches of at most this many, at least once a second while found."""


class IpDocuments:
    """The run's ``ip`` documents, written while ports are found and rewritten as they are learnt.

    :meth:`changed` marks an address whose ports (or names) changed: its document is inserted the
    first time and its port list rewritten after that (``$set``; the embedded server mangles a
    ``$push`` of documents). The writes go out in batches (:class:`Batcher`), so a stopped or
    killed run keeps what it found up to the last second.
    """

    def __init__(
        self, store: ResultWriter, open_ports: dict[str, dict[int, PortInfo]], with_ports: bool
    ) -> None:
        self.store = store
        self.open_ports = open_ports
        self.with_ports = with_ports
        self.names: dict[str, list[str]] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()
        self.batch: Batcher[str] = Batcher(self._write, RESULT_BATCH, RESULT_INTERVAL)

    def changed(self, ip: str) -> None:
        """``ip``'s ports or names changed: write its document with the next batch."""
        self.batch.add(ip)

    def annotate(self, ip: str, fields: dict[str, Any]) -> None:
        """Set more fields of ``ip``'s document (CDN, geolocation, OS).

        They go out with the document; an address not stored yet is not stored for them alone.
        """
        self.extra.setdefault(ip, {}).update(fields)
        if ip in self.stored:
            self.batch.add(ip)

    def add_names(self, ip: str, names: list[str]) -> bool:
        """Remember host names of ``ip``; True when some were new."""
        known = self.names.setdefault(ip, [])
        fresh = [n for n in names if n not in known]
        known.extend(fresh)
        return bool(fresh)

    def _write(self, ips: list[str]) -> None:
        inserts: list[dict[str, Any]] = []
        updates: list[UpdateOne] = []
        for ip in dict.fromkeys(ips):
            info = self.open_ports.get(ip, {})
            ports = [info[p].to_doc() for p in sorted(info)] if self.with_ports else []
            names = self.names.get(ip, [])
            if ip not in self.stored:
                self.stored.add(ip)
                doc = {"ip": ip, "domains": list(names), "ports": ports, "port_count": len(ports)}
                inserts.append({**doc, **self.extra.get(ip, {})})
                continue
            change: dict[str, Any] = {
                "$set": {"ports": ports, "port_count": len(ports), **self.extra.get(ip, {})}
            }
            if names:
                change["$addToSet"] = {"domains": {"$each": list(names)}}
            updates.append(UpdateOne({"task_id": self.store.task_id, "ip": ip}, change))
        self.store.insert("ip", inserts)
        if updates:
            self.store.db["ip"].bulk_write(updates, ordered=False)
