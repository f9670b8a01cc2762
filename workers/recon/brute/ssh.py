"""SSHBrute: SSH password (and keyboard-interactive) login through asyncssh, when it is installed.

Each attempt is its own connection that offers only the password: no local keys, agent, GSS,
host-based auth or ``~/.ssh/config`` of the worker's account are ever used, and any host key is
accepted (the target's identity is not the point of the check).
"""

from __future__ import annotations

import asyncio
import importlib.util

from workers.recon.brute.base import Credential, Probe, ProbedPlugin, ProtocolError, connection

SSH_UNAVAILABLE: str | None = None if importlib.util.find_spec("asyncssh") else "needs the asyncssh package"
"""Why SSHBrute cannot run here, or None when it can."""

if SSH_UNAVAILABLE is None:
    import asyncssh


class SSHBrute(ProbedPlugin):
    """SSH: the server must greet with ``SSH-2.0`` (or ``SSH-1.99``); one login per credential."""

    plugin_name = "SSHBrute"
    app_name = "ssh"
    vul_name = "SSH 弱口令"
    services = frozenset({"ssh"})
    ports = frozenset({22, 2222})
    credential_list = "ssh"
    service_label = "ssh"

    async def probe(self, ip: str, port: int, timeout: float) -> Probe:
        """Read the identification line, then ask which auth methods the server offers (as ``root``).

        A server that offers neither ``password`` nor ``keyboard-interactive`` gets no attempt.
        """
        async with connection(ip, port) as (reader, _):
            line = await reader.readline()
        if not line.startswith((b"SSH-2.0-", b"SSH-1.99-")):
            return Probe.ABSENT
        try:
            methods = await asyncssh.get_server_auth_methods(ip, port, username="root", config=None)
        except asyncssh.Error as exc:
            raise ProtocolError(str(exc)) from exc
        return Probe.AUTH_REQUIRED if {"password", "keyboard-interactive"} & set(methods) else Probe.ABSENT

    async def attempt(self, ip: str, port: int, credential: Credential, timeout: float) -> bool:
        """Log in with the password; True when the server accepts it."""
        try:
            conn = await asyncssh.connect(
                ip,
                port,
                username=credential.username,
                password=credential.password,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                config=None,
                gss_auth=False,
                gss_kex=False,
                host_based_auth=False,
                public_key_auth=False,
                preferred_auth="password,keyboard-interactive",
                connect_timeout=timeout,
                login_timeout=timeout,
            )
        except asyncssh.PermissionDenied:
            return False
        except asyncssh.Error as exc:
            raise ProtocolError(str(exc)) from exc
        conn.close()
        try:
            async with asyncio.timeout(0.5):
                await conn.wait_closed()
        except TimeoutError:
            pass
        return True
