"""RedisBrute: Redis AUTH (password, or ACL user and password), and Redis open to anyone."""

from __future__ import annotations

import asyncio

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection


def resp_command(*parts: str) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _reply_line(reader: asyncio.StreamReader) -> bytes:
    """Read one RESP reply line (simple string or error), or raise ProtocolError."""
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed")
    if line[:1] not in (b"+", b"-", b"$", b":", b"*"):
        raise ProtocolError("not a RESP reply")
    return line.rstrip(b"\r\n")


class RedisBrute(ProbedPlugin):
    """Redis: PING tells open access (``+PONG``) from a password prompt (``-NOAUTH``); then AUTH each."""

    plugin_name = "RedisBrute"
    app_name = "Redis"
    vul_name = "Redis 弱口令"
    services = frozenset({"redis"})
    ports = frozenset({6379, 6380})
    credential_list = "redis"
    service_label = "redis"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """PING without credentials."""
        async with connection(ip, port) as (reader, writer):
            writer.write(resp_command("PING"))
            await writer.drain()
            reply = await _reply_line(reader)
        if reply.startswith(b"+PONG"):
            return Probe.OPEN
        if reply.startswith((b"-NOAUTH", b"-ERR operation not permitted", b"-DENIED")):
            return Probe.AUTH_REQUIRED
        return Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """AUTH with the password (and the ACL user when it is not the default one)."""
        if credential.username in ("", "default"):
            command = resp_command("AUTH", credential.password)
        else:
            command = resp_command("AUTH", credential.username, credential.password)
        async with connection(ip, port) as (reader, writer):
            writer.write(command)
            await writer.drain()
            reply = await _reply_line(reader)
        return reply == b"+OK"
