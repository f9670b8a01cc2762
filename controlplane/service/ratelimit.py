"""Per-token rate limits on create and revoke: token buckets shared by every API process.

The buckets live in Redis (the feed's Redis: the broker when it is Redis, else
``feed.url``), one hash per deployment, action and token name, updated by one Lua
script that reads Redis's own clock: so ``rate_limit`` holds for a token across
``api.processes`` and across hosts, not once per process.  Without Redis (no feed
configured), or while Redis does not answer, each process falls back to a bucket
of its own in memory: limits still hold per process, and a request is never
refused because the limiter's store is down (it waits at most 0.5 s to find out,
once every :data:`RETRY_REDIS_AFTER` seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

from controlplane.config import RateLimitConfig
from controlplane.core.errors import TooManyRequests

log = logging.getLogger(__name__)

_MAX_KEYS = 10_000
#: After Redis fails, this many seconds on the in-memory buckets before it is asked again.
RETRY_REDIS_AFTER = 5.0

# KEYS[1]: the bucket; ARGV: refill per second, burst.  Returns the wait in seconds
# (a string: Lua numbers become integers in replies), "0" when the call is allowed.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'level', 'last')
local level = tonumber(v[1]) or burst
local last = tonumber(v[2]) or now
level = math.min(burst, level + math.max(0, now - last) * rate)
local wait = 0
if level >= 1 then level = level - 1 else wait = (1 - level) / rate end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


def key_prefix(database: str) -> str:
    """The rate limits' Redis keys of one deployment, named like the feed's (``controlplane:feed:<db>``)."""
    return f"controlplane:ratelimit:{database}"


class TokenBucket:
    """``burst`` calls at once, refilled at ``per_minute`` per minute; ``per_minute <= 0`` is unlimited."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one call for ``key``: 0 if allowed, else the seconds until the next one is."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            level, last = self._tokens.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level >= 1.0:
                self._tokens[key] = (level - 1.0, now)
                if len(self._tokens) > _MAX_KEYS:
                    self._tokens.pop(next(iter(self._tokens)))
                return 0.0
            self._tokens[key] = (level, now)
            return (1.0 - level) / self.rate


class RateLimiter:
    """The ``create`` and ``revoke`` buckets of :class:`RateLimitConfig`, in Redis when given one.

    ``redis_url`` is the feed's Redis (``""`` keeps every bucket in memory); ``prefix``
    starts the deployment's keys, ``<prefix>:<action>:<token name>`` (see :func:`key_prefix`).
    """

    def __init__(
        self,
        config: RateLimitConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        redis_url: str = "",
        prefix: str = "controlplane:ratelimit",
    ) -> None:
        self.local = {
            "create": TokenBucket(config.create_per_minute, config.create_burst, clock),
            "revoke": TokenBucket(config.revoke_per_minute, config.revoke_burst, clock),
        }
        self.prefix = prefix
        self.client: Any = None
        self._script: Any = None
        self._redis_down_until = 0.0
        if redis_url and any(bucket.rate > 0 for bucket in self.local.values()):
            self.client = redis.asyncio.Redis.from_url(
                redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
            )
            self._script = self.client.register_script(_TAKE)

    @property
    def shared(self) -> bool:
        """Whether the buckets are kept in Redis (false: per process)."""
        return self.client is not None

    async def check(self, action: str, who: str) -> None:
        """Raise :class:`TooManyRequests` (with ``retry_after``) when ``who`` is over the limit."""
        wait = await self._take(action, who)
        if wait > 0:
            raise TooManyRequests(round(wait, 3))

    async def _take(self, action: str, who: str) -> float:
        bucket = self.local[action]
        if bucket.rate <= 0:
            return 0.0
        if self._script is None or time.monotonic() < self._redis_down_until:
            return bucket.take(who)
        try:
            reply = await self._script(
                keys=[f"{self.prefix}:{action}:{who}"], args=[bucket.rate, bucket.burst]
            )
            return float(reply)
        except (RedisError, OSError, ValueError) as exc:
            self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER
            log.warning(
                "rate limits: Redis did not answer (%s); per-process limits for %.0f s",
                exc,
                RETRY_REDIS_AFTER,
            )
            return bucket.take(who)

    async def close(self) -> None:
        """Close the Redis connections, if any."""
        if self.client is not None:
            await self.client.aclose()
