"""A loopback MongoDB-wire server (OP_MSG) that requires SCRAM authentication, for the weak-password tests.

It answers ``hello`` (with ``saslSupportedMechs`` for known users), refuses ``listDatabases`` with
Unauthorized (13) until a login succeeds, and runs ``saslStart``/``saslContinue`` for SCRAM-SHA-256
and SCRAM-SHA-1 (MongoDB's hashed password), counting each proof it checked.
"""

from __future__ import annotations

import hashlib
import socketserver
import struct
from typing import Any

import bson

from tests.lab.authdb import ScramServer
from tests.lab.authservers import CountingServer, Running

OP_MSG = 2013


class _MongoHandler(socketserver.StreamRequestHandler):
    server: CountingServer

    def _reply(self, request_id: int, doc: dict[str, Any]) -> None:
        body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
        self.wfile.write(struct.pack("<iiii", 16 + len(body), 1, request_id, OP_MSG) + body)

    def handle(self) -> None:
        accounts: dict[str, str] = self.server.settings["accounts"]
        mechanisms: list[str] = self.server.settings["mechanisms"]
        authed = False
        scram: ScramServer | None = None
        while len(header := self.rfile.read(16)) == 16:
            length, request_id, _, opcode = struct.unpack("<iiii", header)
            payload = self.rfile.read(length - 16)
            if opcode != OP_MSG:
                return
            doc = bson.decode(payload[5:])
            name = next(iter(doc))
            reply: dict[str, Any] = {"ok": 1}
            if name == "hello" and self.server.settings["legacy"]:
                reply = {"ok": 0, "code": 59, "codeName": "CommandNotFound", "errmsg": "no such cmd: hello"}
            elif name in ("hello", "isMaster"):
                reply.update(isWritablePrimary=True, maxWireVersion=17, minWireVersion=0)
                user = str(doc.get("saslSupportedMechs", "")).removeprefix("admin.")
                if user in accounts:
                    reply["saslSupportedMechs"] = mechanisms
            elif name == "saslStart" and doc.get("mechanism") in mechanisms:
                client_first = bytes(doc["payload"]).decode()
                user = dict(p.split("=", 1) for p in client_first.split(",")[2:])["n"]
                password = accounts.get(user)
                if doc["mechanism"] == "SCRAM-SHA-1" and password is not None:
                    password = hashlib.md5(
                        f"{user}:mongo:{password}".encode(), usedforsecurity=False
                    ).hexdigest()
                scram = ScramServer(password, "sha256" if doc["mechanism"] == "SCRAM-SHA-256" else "sha1")
                reply.update(conversationId=1, done=False, payload=scram.first(client_first).encode())
            elif name == "saslContinue" and scram is not None:
                if authed:
                    reply.update(conversationId=1, done=True, payload=b"")
                else:
                    self.server.count()
                    verifier = scram.verify(bytes(doc["payload"]).decode())
                    if verifier is None:
                        reply = {
                            "ok": 0,
                            "code": 18,
                            "codeName": "AuthenticationFailed",
                            "errmsg": "auth failed",
                        }
                    else:
                        authed = True
                        reply.update(conversationId=1, done=False, payload=verifier.encode())
            elif name == "listDatabases" and authed:
                reply["databases"] = [{"name": "admin"}]
            else:
                reply = {"ok": 0, "code": 13, "codeName": "Unauthorized", "errmsg": "requires authentication"}
            self._reply(request_id, reply)


def start_mongo_auth(
    accounts: dict[str, str], mechanisms: tuple[str, ...] = ("SCRAM-SHA-256",), legacy: bool = False
) -> Running:
    """A MongoDB-wire server with ``accounts`` (admin users) and their SCRAM ``mechanisms``.

    ``legacy`` imitates a server older than 4.4.2: no ``hello``, only ``isMaster``.
    """
    settings = {"accounts": accounts, "mechanisms": list(mechanisms), "legacy": legacy}
    return Running(CountingServer(_MongoHandler, **settings))
