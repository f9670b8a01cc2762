"""POP3Brute, IMAPBrute and SMTPBrute: the mail protocols' plain logins (USER/PASS, LOGIN, AUTH PLAIN/LOGIN).

Implicit-TLS ports (995, 993, 465) are spoken over TLS. SMTP needs the server to offer AUTH in its
EHLO answer; when it offers STARTTLS instead, the client upgrades first and asks again.
"""

from __future__ import annotations

import asyncio
import base64

from workers.recon.brute.base import (
    Credential,
    Probe,
    ProbedPlugin,
    ProtocolError,
    connection,
    unverified_tls,
)

MAX_LINES = 64


async def _line(reader: asyncio.StreamReader) -> str:
    """One reply line, decoded; EOFError at the end of the stream."""
    raw = await reader.readline()
    if not raw:
        raise EOFError("connection closed")
    return raw.decode("latin-1").rstrip("\r\n")


async def _send(writer: asyncio.StreamWriter, line: str) -> None:
    """Send one command line (refusing line breaks inside it)."""
    if "\r" in line or "\n" in line:
        raise ValueError("line break in a mail command argument")
    writer.write(line.encode("utf-8") + b"\r\n")
    await writer.drain()


class POP3Brute(ProbedPlugin):
    """POP3: ``+OK`` greeting; USER then PASS, ``+OK`` meaning logged in."""

    plugin_name = "POP3Brute"
    app_name = "pop3"
    vul_name = "POP3 弱口令"
    services = frozenset({"pop3", "pop3s"})
    ports = frozenset({110, 995})
    credential_list = "mail"
    service_label = "pop3"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Read the greeting."""
        async with connection(ip, port, tls=port == 995) as (reader, _):
            greeting = await _line(reader)
        return Probe.AUTH_REQUIRED if greeting.startswith("+OK") else Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """USER and PASS."""
        async with connection(ip, port, tls=port == 995) as (reader, writer):
            if not (await _line(reader)).startswith("+OK"):
                raise ProtocolError("no POP3 greeting")
            await _send(writer, f"USER {credential.username}")
            if not (await _line(reader)).startswith("+OK"):
                return False
            await _send(writer, f"PASS {credential.password}")
            accepted = (await _line(reader)).startswith("+OK")
            await _send(writer, "QUIT")
            return accepted


def imap_quote(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IMAPBrute(ProbedPlugin):
    """IMAP: ``* OK`` greeting; ``LOGIN`` with quoted strings, a tagged ``OK`` meaning logged in."""

    plugin_name = "IMAPBrute"
    app_name = "imap"
    vul_name = "IMAP 弱口令"
    services = frozenset({"imap", "imaps"})
    ports = frozenset({143, 993})
    credential_list = "mail"
    service_label = "imap"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Read the greeting; a server that disables LOGIN in clear text is not tried."""
        async with connection(ip, port, tls=port == 993) as (reader, _):
            greeting = await _line(reader)
        if greeting.startswith("* OK") and "LOGINDISABLED" not in greeting.upper():
            return Probe.AUTH_REQUIRED
        return Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """``a1 LOGIN user password``."""
        async with connection(ip, port, tls=port == 993) as (reader, writer):
            if not (await _line(reader)).startswith("* OK"):
                raise ProtocolError("no IMAP greeting")
            await _send(
                writer, f"a1 LOGIN {imap_quote(credential.username)} {imap_quote(credential.password)}"
            )
            for _ in range(MAX_LINES):
                line = await _line(reader)
                if line.startswith("a1 "):
                    accepted = line[3:].upper().startswith("OK")
                    await _send(writer, "a2 LOGOUT")
                    return accepted
        raise ProtocolError("no tagged IMAP answer")


async def _smtp_reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """One SMTP reply: its code and its lines' texts."""
    texts: list[str] = []
    for _ in range(MAX_LINES):
        line = await _line(reader)
        if len(line) < 3 or not line[:3].isdigit():
            raise ProtocolError("not an SMTP reply")
        texts.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), texts
    raise ProtocolError("endless SMTP reply")


class SMTPBrute(ProbedPlugin):
    """SMTP: EHLO must offer AUTH PLAIN or LOGIN (after STARTTLS if need be); 235 means accepted."""

    plugin_name = "SMTPBrute"
    app_name = "smtp"
    vul_name = "SMTP 弱口令"
    services = frozenset({"smtp", "smtps", "submission"})
    ports = frozenset({25, 465, 587})
    credential_list = "mail"
    service_label = "smtp"

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, set[str]]:
        """Greeting and EHLO (and STARTTLS when AUTH needs it); the AUTH mechanisms offered."""
        code, _ = await _smtp_reply(reader)
        if code != 220:
            raise ProtocolError("no SMTP greeting")
        await _send(writer, "EHLO recon-worker")
        code, lines = await _smtp_reply(reader)
        if code != 250:
            return reader, set()
        mechanisms = {
            m for line in lines if line.upper().startswith("AUTH") for m in line.upper().split()[1:]
        }
        if not mechanisms and any(line.upper().startswith("STARTTLS") for line in lines):
            await _send(writer, "STARTTLS")
            code, _ = await _smtp_reply(reader)
            if code != 220:
                return reader, set()
            await writer.start_tls(unverified_tls())
            await _send(writer, "EHLO recon-worker")
            code, lines = await _smtp_reply(reader)
            mechanisms = {
                m for line in lines if line.upper().startswith("AUTH") for m in line.upper().split()[1:]
            }
        return reader, mechanisms & {"PLAIN", "LOGIN"}

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """An SMTP server that offers password AUTH."""
        async with connection(ip, port, tls=port == 465) as (reader, writer):
            _, mechanisms = await self._session(reader, writer)
        return Probe.AUTH_REQUIRED if mechanisms else Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """AUTH PLAIN (or AUTH LOGIN when PLAIN is not offered)."""
        user, password = credential.username.encode(), credential.password.encode()
        async with connection(ip, port, tls=port == 465) as (reader, writer):
            reader, mechanisms = await self._session(reader, writer)
            if "PLAIN" in mechanisms:
                await _send(
                    writer, "AUTH PLAIN " + base64.b64encode(b"\x00" + user + b"\x00" + password).decode()
                )
            elif "LOGIN" in mechanisms:
                await _send(writer, "AUTH LOGIN")
                for value in (user, password):
                    code, _ = await _smtp_reply(reader)
                    if code != 334:
                        return False
                    await _send(writer, base64.b64encode(value).decode())
            else:
                raise ProtocolError("AUTH no longer offered")
            code, _ = await _smtp_reply(reader)
            await _send(writer, "QUIT")
            return code == 235
