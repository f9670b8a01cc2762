"""Per-token rate limits on create and revoke: token buckets, in memory, per API process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from controlplane.config import RateLimitConfig
from controlplane.errors import TooManyRequests

_MAX_KEYS = 10_000


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
    """The ``create`` and ``revoke`` buckets of :class:`RateLimitConfig`."""

    def __init__(self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = {
            "create": TokenBucket(config.create_per_minute, config.create_burst, clock),
            "revoke": TokenBucket(config.revoke_per_minute, config.revoke_burst, clock),
        }

    def check(self, action: str, who: str) -> None:
        """Raise :class:`TooManyRequests` (with ``retry_after``) when ``who`` is over the limit."""
        wait = self.buckets[action].take(who)
        if wait > 0:
            raise TooManyRequests(round(wait, 3))
