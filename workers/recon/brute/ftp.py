"""FTPBrute: FTP USER/PASS, anonymous login included (it is the first entry of the bundled list)."""

from __future__ import annotations

import asyncio

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection

MAX_REPLY_LINES = 64


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read one FTP reply, multi-line ones included; returns its code and text."""
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed")
    text = line.decode("latin-1").rstrip("\r\n")
    if len(text) < 3 or not text[:3].isdigit():
        raise ProtocolError("not an FTP reply")
    code = int(text[:3])
    if text[3:4] == "-":
        for _ in range(MAX_REPLY_LINES):
            line = await reader.readline()
            if not line:
                raise EOFError("connection closed")
            more = line.decode("latin-1").rstrip("\r\n")
            if more.startswith(f"{code} "):
                break
        else:
            raise ProtocolError("endless FTP reply")
    return code, text


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> int:
    """Send one command line and return the reply code."""
    if "\r" in line or "\n" in line:
        raise ValueError("line break in an FTP argument")
    writer.write(line.encode("utf-8") + b"\r\n")
    await writer.drain()
    code, _ = await read_reply(reader)
    return code


class FTPBrute(ProbedPlugin):
    """FTP: the greeting must be a 220; then USER and PASS per credential, 230 meaning logged in."""

    plugin_name = "FTPBrute"
    app_name = "ftp"
    vul_name = "FTP 弱口令"
    services = frozenset({"ftp"})
    ports = frozenset({21})
    credential_list = "ftp"
    service_label = "ftp"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Read the greeting."""
        async with connection(ip, port) as (reader, _):
            code, _ = await read_reply(reader)
        return Probe.AUTH_REQUIRED if code == 220 else Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """USER, then PASS when asked for; QUIT either way."""
        async with connection(ip, port) as (reader, writer):
            code, _ = await read_reply(reader)
            if code != 220:
                raise ProtocolError(f"greeting {code}")
            code = await _command(reader, writer, f"USER {credential.username}")
            if code == 331:
                code = await _command(reader, writer, f"PASS {credential.password}")
            writer.write(b"QUIT\r\n")
            return code == 230
