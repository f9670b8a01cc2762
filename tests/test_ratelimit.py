"""Rate limits shared through Redis (real Redis), with the per-process fallback."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from controlplane.config import RateLimitConfig
from controlplane.core.errors import TooManyRequests
from controlplane.runtime import embedded
from controlplane.service.ratelimit import RateLimiter
from tests.conftest import fresh_redis_url

LIMITS = RateLimitConfig(create_per_minute=1, create_burst=3, revoke_per_minute=1, revoke_burst=1)


async def _outcomes(limiter: RateLimiter, action: str, who: str, n: int) -> list[float]:
    """0 for each allowed call, the retry_after of each refused one."""
    out: list[float] = []
    for _ in range(n):
        try:
            await limiter.check(action, who)
            out.append(0.0)
        except TooManyRequests as exc:
            out.append(float(exc.retry_after or 0.0))
    return out


def test_two_limiters_on_one_redis_share_each_tokens_budget() -> None:
    async def run() -> None:
        url, prefix = fresh_redis_url(), f"t-{uuid.uuid4().hex[:8]}"
        first = RateLimiter(LIMITS, redis_url=url, prefix=prefix)
        second = RateLimiter(LIMITS, redis_url=url, prefix=prefix)
        other_deployment = RateLimiter(LIMITS, redis_url=url, prefix=prefix + "-other")
        try:
            assert first.shared and second.shared
            # Alternating between the two "processes": three calls in all, not three each.
            got = []
            for limiter in (first, second, first, second, first, second):
                got += await _outcomes(limiter, "create", "alice", 1)
            assert [g == 0 for g in got] == [True, True, True, False, False, False]
            assert all(50 < g <= 60 for g in got[3:])  # one call a minute: the next is about a minute away
            # Another token, another action and another deployment have budgets of their own.
            assert await _outcomes(second, "create", "bob", 1) == [0.0]
            assert (await _outcomes(first, "revoke", "alice", 2))[0] == 0.0
            assert await _outcomes(other_deployment, "create", "alice", 1) == [0.0]
        finally:
            for limiter in (first, second, other_deployment):
                await limiter.close()

    asyncio.run(run())


def test_without_redis_each_limiter_keeps_its_own_budget() -> None:
    async def run() -> None:
        dead = f"redis://127.0.0.1:{embedded.free_port()}/0"  # nothing listens there
        for limiter in (RateLimiter(LIMITS), RateLimiter(LIMITS, redis_url=dead)):
            try:
                got = await _outcomes(limiter, "create", "alice", 4)
                assert [g == 0 for g in got] == [True, True, True, False]
            finally:
                await limiter.close()
        assert not RateLimiter(LIMITS).shared

    asyncio.run(run())


def test_unlimited_actions_never_ask_redis() -> None:
    unlimited = RateLimitConfig(create_per_minute=0, revoke_per_minute=0)
    limiter = RateLimiter(unlimited, redis_url=fresh_redis_url())
    assert not limiter.shared
    assert asyncio.run(_outcomes(limiter, "create", "alice", 50)) == [0.0] * 50


@pytest.mark.parametrize("action", ["create", "revoke"])
def test_a_refusal_says_when_to_retry(action: str) -> None:
    async def run() -> None:
        limiter = RateLimiter(LIMITS, redis_url=fresh_redis_url(), prefix=f"t-{uuid.uuid4().hex[:8]}")
        try:
            burst = LIMITS.create_burst if action == "create" else LIMITS.revoke_burst
            got = await _outcomes(limiter, action, "carol", burst + 1)
            assert got[:burst] == [0.0] * burst and got[burst] > 0
        finally:
            await limiter.close()

    asyncio.run(run())
