"""API tokens, roles and who is calling.

Tokens look like ``cp_<salt>_<secret>``: 16 hex characters of salt and 43
characters of URL-safe randomness (256 bits). The configuration holds only
``pbkdf2_sha256$<iterations>$<salt>$<hex digest>`` of each token, never the
token itself. The salt doubles as a lookup key, so a presented token is
checked against exactly one stored hash (an unknown salt costs no hashing at
all), and digests are compared with :func:`hmac.compare_digest`.

PBKDF2 runs once per token and process: a verified token is cached under an
HMAC of the token with a per-process random key, so each later request costs
one HMAC-SHA256 and a dict lookup (about a microsecond).

Wrong secrets are throttled per client address (an IPv6 address counts as its
/64), never per token: after :data:`MAX_FAILURES` wrong secrets within
:data:`FAILURE_WINDOW` seconds, that address may have one secret checked every
:data:`SLOT` seconds (a request waits up to :data:`MAX_WAIT` seconds for its
turn; beyond that, or when it was wrong, it gets 429 with Retry-After). So
guessing cannot make the API hash without bound, and nobody can lock a token
out: a correct secret is always checked and always accepted, from any other
address at once and from the throttled address at its turn. Logs name the
client address and a reason, never a token or its salt; :func:`redact_tokens`
takes tokens out of any text that is about to be logged.

Roles: ``viewer`` may read (GET, the WebSocket feed); ``operator`` may also
create and revoke. With ``auth.enabled: false`` every caller is the operator
``anonymous`` and every start logs a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.config import Config, ConfigError, TokenEntry
from controlplane.core.errors import NotLogin, TooManyRequests

log = logging.getLogger(__name__)

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
_RANK = {VIEWER: 1, OPERATOR: 2}

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 60_000
TOKEN_FILE = "tokens.yaml"  # noqa: S105 - a file name
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 - a file name
#: Wrong secrets an address may present within :data:`FAILURE_WINDOW` seconds before it is throttled.
MAX_FAILURES = 20
FAILURE_WINDOW = 10.0
#: A throttled address has one secret checked per this many seconds.
SLOT = FAILURE_WINDOW / MAX_FAILURES
#: The longest a throttled address's request waits for its turn; beyond it, 429 at once.
MAX_WAIT = 2.0
#: Addresses whose failures are remembered (the least recently failing are forgotten first).
MAX_ADDRESSES = 10_000
_CACHE_SIZE = 4096
_TOKEN = re.compile(r"cp_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})")
_MAX_TOKEN = 256
_REFUSED = "a valid API token is required"

# What tokens look like in text that is about to be logged: the token itself (or anything
# shaped like one, such as a guess carrying someone's salt), a ``token=`` query value, a
# JSON or Python ``"token": "..."`` pair, a bearer credential.
_SECRETS_IN_TEXT = (
    (re.compile(r"(?<![A-Za-z0-9])cp_[A-Za-z0-9_-]{16,}"), "cp_[redacted]"),
    (re.compile(r"(\b(?:[A-Za-z]+_)?token=)[^&\s#\"'<>]*", re.IGNORECASE), r"\1[redacted]"),
    (
        re.compile(r"""(["'](?:[A-Za-z]+_)?token["']\s*:\s*)(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""", re.I),
        r'\1"[redacted]"',
    ),
    (re.compile(r"(\bbearer\s+)[^\s\"',;]+", re.IGNORECASE), r"\1[redacted]"),
)


def redact_tokens(text: str) -> str:
    """``text`` with every token, ``token=`` value, ``"token": ...`` pair and bearer credential replaced."""
    lowered = text.lower()
    if "cp_" not in lowered and "token" not in lowered and "bearer" not in lowered:
        return text
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def client_key(address: str | None) -> str:
    """The unit failures are counted in: an IPv4 address, an IPv6 address's /64, else the text."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and its role (``viewer`` or ``operator``)."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        """Whether this principal has ``role`` or a stronger one."""
        return _RANK.get(self.role, 0) >= _RANK[role]


ANONYMOUS = Principal("anonymous", OPERATOR)


def new_token() -> str:
    """A fresh random token ``cp_<salt>_<secret>``."""
    return f"cp_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def _digest(token: str, salt: str, iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", token.encode("utf-8"), salt.encode("ascii"), iterations).hex()


def hash_token(token: str, iterations: int = ITERATIONS) -> str:
    """The stored form of ``token``: ``pbkdf2_sha256$<iterations>$<salt>$<hex>`` (salt from the token)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise ValueError("not a controlplane token (expected cp_<16 hex>_<secret>)")
    salt = match[1]
    return f"{ALGORITHM}${iterations}${salt}${_digest(token, salt, iterations)}"


def _parse_hash(value: str) -> tuple[int, str, str]:
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise ValueError("expected pbkdf2_sha256$<iterations>$<salt>$<hex>")
    iterations = int(parts[1])
    if not 1000 <= iterations <= 10_000_000 or not re.fullmatch(r"[0-9a-f]{16}", parts[2]):
        raise ValueError("bad iterations or salt")
    if not re.fullmatch(r"[0-9a-f]{64}", parts[3]):
        raise ValueError("bad digest")
    return iterations, parts[2], parts[3]


def token_entry(name: str, role: str, token: str, iterations: int = ITERATIONS) -> dict[str, str]:
    """The configuration entry (``auth.tokens`` item or token-file item) for ``token``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return {"name": name, "role": role, "hash": hash_token(token, iterations)}


def token_from_request(request: Any, *, allow_query: bool = True) -> str | None:
    """The token a request presents: ``Authorization: Bearer <t>``, ``Token: <t>``, or ``?token=<t>``.

    The query argument is for browsers' WebSocket connections, which cannot
    set headers; pass ``allow_query=False`` to ignore it (the REST handlers do,
    so tokens do not end up in access logs and browser history by accident).
    """
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    token = request.headers.get("Token")
    if token:
        return str(token).strip() or None
    if allow_query:
        values = request.query_arguments.get("token") or []
        if values:
            try:
                return values[-1].decode("utf-8").strip() or None
            except UnicodeDecodeError:
                return None
    return None


@dataclass(frozen=True)
class _Stored:
    principal: Principal
    iterations: int
    digest: str


@dataclass
class _Address:
    """What is remembered of one client address: its last wrong secrets and its next turn."""

    failures: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_FAILURES))
    next_turn: float = 0.0
    announced: bool = False

    def throttled(self, now: float) -> bool:
        return len(self.failures) >= MAX_FAILURES and now - self.failures[0] < FAILURE_WINDOW

    def retry_after(self, now: float) -> float:
        clears = self.failures[0] + FAILURE_WINDOW - now if self.failures else 0.0
        return max(SLOT, self.next_turn - now, clears)


class Authenticator:
    """Turns a presented token into a :class:`Principal`, or raises :class:`NotLogin`.

    From a throttled client address (see the module docstring) it raises
    :class:`TooManyRequests` instead; :meth:`authenticate_async` waits for the
    address's turn where :meth:`authenticate` cannot.
    """

    def __init__(self, entries: Iterable[TokenEntry | Mapping[str, Any]], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._by_salt: dict[str, _Stored] = {}
        for raw in entries:
            entry = raw if isinstance(raw, TokenEntry) else TokenEntry(**dict(raw))
            if entry.role not in ROLES:
                raise ValueError(f"token {entry.name!r}: role must be one of {', '.join(ROLES)}")
            iterations, salt, digest = _parse_hash(entry.hash)
            if salt in self._by_salt:
                first = self._by_salt[salt].principal.name
                raise ValueError(f"token {entry.name!r}: the same token as {first!r} is configured twice")
            self._by_salt[salt] = _Stored(Principal(entry.name or "unnamed", entry.role), iterations, digest)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> Authenticator:
        """Every caller is the operator ``anonymous``."""
        return cls([], enabled=False)

    @classmethod
    def from_config(cls, config: Config) -> Authenticator:
        """Tokens of ``auth.tokens`` plus those of the token file (default ``<data_dir>/tokens.yaml``)."""
        if not config.auth.enabled:
            return cls.disabled()
        path = token_file_path(config)
        in_file = read_token_file(path)
        try:
            return cls([*config.auth.tokens, *in_file])
        except (ValueError, TypeError) as exc:
            # auth.tokens was checked when the config loaded: the file has an entry edited by
            # hand, or one repeating a token of auth.tokens.
            try:
                cls(in_file)
                where = f"token file {path} and auth.tokens"
            except (ValueError, TypeError):
                where = f"token file {path}"
            raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None

    def __len__(self) -> int:
        return len(self._by_salt)

    def authenticate(self, token: str | None, client: str | None = None) -> Principal:
        """The principal of ``token`` presented from address ``client``, without waiting.

        :class:`NotLogin` when the token is missing or wrong; :class:`TooManyRequests` when
        ``client`` is throttled and its turn has not come (without ``client``, NotLogin then).
        """
        found = self._lookup(token)
        if isinstance(found, Principal):
            return found
        self._take_turn(client, wait=False)
        return self._verify(found, client)

    async def authenticate_async(self, token: str | None, client: str | None = None) -> Principal:
        """As :meth:`authenticate`, but a throttled address waits (up to :data:`MAX_WAIT`) for its turn."""
        found = self._lookup(token)
        if isinstance(found, Principal):
            return found
        delay = self._take_turn(client, wait=True)
        if delay > 0:
            await asyncio.sleep(delay)
        return self._verify(found, client)

    def _lookup(self, token: str | None) -> Principal | tuple[str, bytes, str, _Stored]:
        """A cached (or the anonymous) principal, or what :meth:`_verify` needs; NotLogin for a
        token that is malformed or names no configured salt (neither costs any hashing)."""
        if not self.enabled:
            return ANONYMOUS
        if not token or len(token) > _MAX_TOKEN:
            raise NotLogin({"reason": _REFUSED})
        key = hmac.new(self._key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        match = _TOKEN.fullmatch(token)
        stored = self._by_salt.get(match[1]) if match else None
        if match is None or stored is None:
            raise NotLogin({"reason": _REFUSED})
        return token, key, match[1], stored

    def _take_turn(self, client: str | None, *, wait: bool) -> float:
        """Seconds until a throttled ``client`` may have a secret checked (that turn is then
        taken); 0 when it is not throttled. Raises when the turn is too far (or ``wait`` is false)."""
        now = time.monotonic()
        with self._lock:
            state = self._addresses.get(client_key(client))
            if state is None or not state.throttled(now):
                return 0.0
            start = max(now, state.next_turn)
            delay = start - now
            if delay > (MAX_WAIT if wait else 0.0):
                raise self._throttled_error(client, state.retry_after(now))
            state.next_turn = start + SLOT
            return delay

    def _verify(self, found: tuple[str, bytes, str, _Stored], client: str | None) -> Principal:
        token, key, salt, stored = found
        with self._lock:
            hit = self._cache.get(key)  # verified meanwhile, by a request that did not wait
        if hit is not None:
            return hit
        if not hmac.compare_digest(_digest(token, salt, stored.iterations), stored.digest):
            raise self._failure(client)
        with self._lock:
            self._cache[key] = stored.principal
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return stored.principal

    def _failure(self, client: str | None) -> NotLogin | TooManyRequests:
        """Count a wrong secret against ``client``: the error to answer (TooManyRequests once throttled)."""
        address = client_key(client)
        now = time.monotonic()
        with self._lock:
            state = self._addresses.pop(address, None) or _Address()
            self._addresses[address] = state  # the most recently failing last
            while len(self._addresses) > MAX_ADDRESSES:
                self._addresses.popitem(last=False)
            was = state.throttled(now)
            if not was:
                state.announced = False
            state.failures.append(now)
            throttled = state.throttled(now)
            announce = throttled and not state.announced
            state.announced = state.announced or throttled
            if throttled and not was:
                state.next_turn = now + SLOT
            retry = state.retry_after(now)
        if announce:
            log.warning(
                "throttling API token checks from %s: %d wrong secrets within %.0f s",
                address,
                MAX_FAILURES,
                FAILURE_WINDOW,
            )
        elif not throttled:
            log.warning("wrong secret for an API token from %s", address)
        if throttled:
            return self._throttled_error(client, retry)
        return NotLogin({"reason": _REFUSED})

    @staticmethod
    def _throttled_error(client: str | None, retry_after: float) -> NotLogin | TooManyRequests:
        if client is None:
            return NotLogin({"reason": _REFUSED})
        error = TooManyRequests(round(retry_after, 3))
        error.data["reason"] = "too many wrong API tokens from this address"
        return error


# -- the token file ------------------------------------------------------------


def token_file_path(config: Config) -> Path:
    """``auth.token_file``, or ``<data_dir>/tokens.yaml``."""
    return Path(config.auth.token_file or Path(config.data_dir) / TOKEN_FILE)


def read_token_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a token file (``tokens: [{name, role, hash}]``); none if it does not exist."""
    if not path.is_file():
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("token file %s is accessible by others (mode %o); chmod 600 it", path, mode)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"token file {path}: {' '.join(str(exc).split())}") from None
    tokens = loaded.get("tokens", []) if isinstance(loaded, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise ConfigError(f"token file {path}: expected `tokens: [{{name, role, hash}}, ...]`")
    return tokens


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def append_token(path: Path, entry: Mapping[str, str]) -> None:
    """Add one entry to a token file (created 0600 if needed)."""
    tokens = read_token_file(path)
    tokens.append(dict(entry))
    _write_private(path, yaml.safe_dump({"tokens": tokens}, sort_keys=False))


def ensure_operator_token(data_dir: Path, token_file: Path | None = None) -> str | None:
    """On first start: create an operator token, store it, return it; afterwards None.

    The hash goes into the token file (``<data_dir>/tokens.yaml``) the API reads;
    the token itself into ``<data_dir>/operator.token`` so the local owner can
    find it again. Both are mode 0600.
    """
    token_file = token_file or data_dir / TOKEN_FILE
    plain = data_dir / OPERATOR_TOKEN_FILE
    if token_file.exists() and any(t.get("role") == OPERATOR for t in read_token_file(token_file)):
        return None
    token = new_token()
    _write_private(plain, token + "\n")
    append_token(token_file, token_entry("operator", OPERATOR, token))
    return token


def warn_if_disabled(config: Config, logger: logging.Logger | None = None) -> None:
    """The loud warning every start logs when authentication is off."""
    if not config.auth.enabled:
        (logger or log).warning(
            "!!! AUTHENTICATION IS DISABLED (auth.enabled: false): anyone who can reach "
            "%s:%d can create and stop scans. Never run like this on a shared network. !!!",
            config.api.host,
            config.api.port,
        )
