"""What the recon library needs from its caller (:class:`ReconContext`), and the scope check of a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from controlplane.config import LimitsConfig, ReconConfig

log = logging.getLogger(__name__)

DEFAULT_LIMITS = LimitsConfig()
DEFAULT_RECON = ReconConfig()
"""The configuration's defaults (``limits`` and ``recon``): the defaults of a :class:`ReconContext`."""
SCAN_CONCURRENCY = 1000
"""The default largest window of a port scan (connects in flight; it shrinks when answers time out)."""
SCAN_RETRIES = 2
"""How many times a connect that timed out is tried again before its port counts as filtered."""


@dataclass
class ReconContext:
    """Everything the pipeline needs from its caller (the Celery task wrapper).

    ``progress(stage, done, total)`` is called at most five times a second, and at least once a
    second while a stage runs (repeating the last values when nothing moved). ``config`` is the
    whole ``recon`` section, for the stages with settings of their own (passive sources, GeoIP,
    templates, leak list).
    """

    task_id: str
    db: Database[Any]
    resolvers: list[str]
    progress: Callable[[str, int, int], None]
    should_stop: Callable[[], bool]
    scope_check: Callable[[str], bool]
    max_cidr_addresses: int = DEFAULT_LIMITS.max_cidr_addresses
    dns_timeout: float = DEFAULT_RECON.dns_timeout
    connect_timeout: float = DEFAULT_RECON.connect_timeout
    concurrency: int = DEFAULT_RECON.concurrency
    http_timeout: float = DEFAULT_RECON.http_timeout
    scan_concurrency: int = SCAN_CONCURRENCY
    scan_retries: int = SCAN_RETRIES
    config: ReconConfig = field(default_factory=ReconConfig)


class ScopeCheck:
    """``ctx.scope_check`` with its answers cached for one run; a failing check counts as out of scope."""

    def __init__(self, ctx: ReconContext) -> None:
        self.ctx = ctx
        self._answers: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        """Whether ``host`` (a name or an IP literal) may be contacted."""
        if host not in self._answers:
            try:
                self._answers[host] = bool(self.ctx.scope_check(host))
            except Exception:
                log.exception("scope_check failed for %s", host)
                self._answers[host] = False
        return self._answers[host]
