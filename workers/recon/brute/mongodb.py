"""MongoDBBrute: MongoDB open to anyone, else SCRAM logins against ``admin``, over OP_MSG.

The probe sends ``hello`` (``isMaster`` to servers older than 4.4.2), answered without
authentication, so a reply with ``maxWireVersion`` proves the protocol; then ``listDatabases``:
``ok: 1`` means open access, error 13 (Unauthorized) means credentials are needed. Each attempt
asks for the user's SCRAM mechanisms (``saslSupportedMechs``; none means no such user) and runs
SCRAM-SHA-256, or SCRAM-SHA-1 with MongoDB's hashed password, through ``saslStart``/``saslContinue``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
from typing import Any

import bson

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection
from workers.recon.brute.scram import ScramClient, ScramError

OP_MSG = 2013
MAX_REPLY = 1 << 20
UNAUTHORIZED = 13
_request_ids = itertools.count(1)


async def command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, doc: dict[str, Any]
) -> dict[str, Any]:
    """Send one command as OP_MSG and return the reply document."""
    body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    writer.write(struct.pack("<iiii", 16 + len(body), next(_request_ids), 0, OP_MSG) + body)
    await writer.drain()
    length, _, _, opcode = struct.unpack("<iiii", await reader.readexactly(16))
    if opcode != OP_MSG or not 21 <= length <= MAX_REPLY:
        raise ProtocolError("not a MongoDB OP_MSG reply")
    payload = await reader.readexactly(length - 16)
    if payload[4:5] != b"\x00":
        raise ProtocolError("unexpected OP_MSG section")
    try:
        return dict(bson.decode(payload[5:]))
    except (bson.errors.BSONError, ValueError) as exc:
        raise ProtocolError("bad BSON reply") from exc


async def handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: dict[str, Any]
) -> dict[str, Any]:
    """``hello`` (MongoDB 4.4.2+), or ``isMaster`` when the server does not know ``hello``."""
    reply = await command(reader, writer, {"hello": 1, **extra, "$db": "admin"})
    if reply.get("ok") != 1:
        reply = await command(reader, writer, {"isMaster": 1, **extra, "$db": "admin"})
    return reply


def mongo_sha1_password(username: str, password: str) -> str:
    """SCRAM-SHA-1's password in MongoDB: md5hex of ``user:mongo:password``."""
    return hashlib.md5(f"{username}:mongo:{password}".encode(), usedforsecurity=False).hexdigest()


class MongoDBBrute(ProbedPlugin):
    """MongoDB: open access by the probe, else one SCRAM conversation per credential."""

    plugin_name = "MongoDBBrute"
    app_name = "mongodb"
    vul_name = "MongoDB 弱口令"
    services = frozenset({"mongodb", "mongod", "mongo"})
    ports = frozenset({27017, 27018})
    credential_list = "mongodb"
    service_label = "mongodb"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """``hello``, then ``listDatabases`` without credentials."""
        async with connection(ip, port) as (reader, writer):
            hello = await handshake(reader, writer, {})
            if "maxWireVersion" not in hello:
                return Probe.ABSENT
            listing = await command(reader, writer, {"listDatabases": 1, "nameOnly": True, "$db": "admin"})
        if listing.get("ok") == 1:
            return Probe.OPEN
        return Probe.AUTH_REQUIRED if listing.get("code") == UNAUTHORIZED else Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """One SCRAM login against ``admin``."""
        async with connection(ip, port) as (reader, writer):
            hello = await handshake(reader, writer, {"saslSupportedMechs": f"admin.{credential.username}"})
            mechanisms = hello.get("saslSupportedMechs") or []
            if "SCRAM-SHA-256" in mechanisms:
                mechanism, scram = (
                    "SCRAM-SHA-256",
                    ScramClient(credential.password, "sha256", credential.username),
                )
            elif "SCRAM-SHA-1" in mechanisms:
                password = mongo_sha1_password(credential.username, credential.password)
                mechanism, scram = "SCRAM-SHA-1", ScramClient(password, "sha1", credential.username)
            else:
                return False
            return await self._converse(reader, writer, mechanism, scram)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mechanism: str, scram: ScramClient
    ) -> bool:
        """Run saslStart and saslContinue; True when the server says done with a valid signature."""
        reply = await command(
            reader,
            writer,
            {
                "saslStart": 1,
                "mechanism": mechanism,
                "payload": scram.first().encode(),
                "autoAuthorize": 1,
                "$db": "admin",
            },
        )
        if reply.get("ok") != 1:
            return False
        try:
            final = scram.final(bytes(reply["payload"]).decode("utf-8"))
        except (KeyError, ScramError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"bad SCRAM exchange: {exc}") from exc
        conversation = reply.get("conversationId")
        reply = await command(
            reader,
            writer,
            {"saslContinue": 1, "conversationId": conversation, "payload": final.encode(), "$db": "admin"},
        )
        if reply.get("ok") != 1:
            return False
        if not scram.verify(bytes(reply.get("payload", b"")).decode("utf-8", "replace")):
            raise ProtocolError("server SCRAM signature mismatch")
        if not reply.get("done"):
            reply = await command(
                reader,
                writer,
                {"saslContinue": 1, "conversationId": conversation, "payload": b"", "$db": "admin"},
            )
        return reply.get("ok") == 1 and bool(reply.get("done"))
