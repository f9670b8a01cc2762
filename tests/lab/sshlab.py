"""A loopback SSH server (asyncssh) with password accounts, for the weak-password tests.

It runs its own event loop in a daemon thread, accepts password authentication (or offers public
keys only), counts the passwords it checked, and opens no session (a login is all the tests need).
"""

from __future__ import annotations

import asyncio
import threading

import asyncssh


class _Server(asyncssh.SSHServer):
    def __init__(self, lab: SSHLab) -> None:
        self.lab = lab

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self.lab.passwords

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        with self.lab.lock:
            self.lab.attempts += 1
        return self.lab.accounts.get(username) == password


class SSHLab:
    """An SSH server on 127.0.0.1 and an ephemeral port; ``passwords`` False offers public keys only."""

    def __init__(self, accounts: dict[str, str], passwords: bool = True) -> None:
        self.passwords = passwords
        self.ip = "127.0.0.1"
        self.port = 0
        self.accounts = accounts
        self.attempts = 0
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncssh.SSHAcceptor | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _start(self) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        self._server = await asyncssh.create_server(
            lambda: _Server(self), self.ip, 0, server_host_keys=[key], login_timeout=10
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> SSHLab:
        """Start the loop thread and the server."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the server and stop the loop."""
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
