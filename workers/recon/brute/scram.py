"""The client side of SCRAM (RFC 5802 / RFC 7677), shared by PostgreSQL and MongoDB.

Passwords are used as given (no SASLprep): the bundled defaults are ASCII, where SASLprep changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


class ScramError(Exception):
    """The server's SCRAM messages were malformed or its proof was wrong."""


def _attributes(message: str) -> dict[str, str]:
    """Split ``a=1,b=2`` into a dict (values may hold ``=``)."""
    out = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


class ScramClient:
    """One SCRAM conversation: :meth:`first`, :meth:`final` (given the server's first), :meth:`verify`."""

    def __init__(
        self, password: str, hash_name: str = "sha256", username: str = "", nonce: str | None = None
    ) -> None:
        self.password = password.encode("utf-8")
        self.hash_name = hash_name
        self.username = username.replace("=", "=3D").replace(",", "=2C")
        self.nonce = nonce or secrets.token_urlsafe(18)
        self._auth_message = b""
        self._salted = b""

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash_name).digest()

    @property
    def first_bare(self) -> str:
        """client-first-message-bare."""
        return f"n={self.username},r={self.nonce}"

    def first(self) -> str:
        """client-first-message (no channel binding)."""
        return "n,," + self.first_bare

    def final(self, server_first: str) -> str:
        """client-final-message, with the proof, for the server's first message."""
        attrs = _attributes(server_first)
        try:
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (KeyError, ValueError) as exc:
            raise ScramError("malformed server-first-message") from exc
        if not nonce.startswith(self.nonce) or not 0 < iterations <= 1_000_000:
            raise ScramError("bad server nonce or iteration count")
        self._salted = hashlib.pbkdf2_hmac(self.hash_name, self.password, salt, iterations)
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        client_key = self._hmac(self._salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        signature = self._hmac(stored_key, self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final: str) -> bool:
        """Tell whether the server's final message proves it knew the password too."""
        attrs = _attributes(server_final)
        if "v" not in attrs:
            return False
        server_key = self._hmac(self._salted, b"Server Key")
        expected = self._hmac(server_key, self._auth_message)
        try:
            return hmac.compare_digest(base64.b64decode(attrs["v"]), expected)
        except ValueError:
            return False
