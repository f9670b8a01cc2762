"""Helpers shared by the weak-password tests: a password in no list, a short-timeout runner, a finding."""

from __future__ import annotations

import asyncio
from typing import Any

from workers.recon.brute import BruteReport, run_brute

STRONG = "k7#Vq9!zR2-never-in-a-list"
"""A password in no bundled list."""


def brute(targets: list[tuple[str, int, str]], plugins: list[str], **options: Any) -> BruteReport:
    """Run the brute stage to completion with a short per-connection timeout."""
    options.setdefault("timeout", 3.0)
    return asyncio.run(run_brute(targets, plugins, **options))


def only_finding(report: BruteReport) -> tuple[str, str, str, bool]:
    """The single finding's plugin, username, password and open-access flag (asserting there is one)."""
    assert len(report.findings) == 1, report
    found = report.findings[0]
    return found.plugin_name, found.username, found.password, found.unauthenticated
