"""Helpers shared by the recon tests and the benchmark: option sets, scope, task ids."""

from __future__ import annotations

import itertools
from typing import Any

from tests.lab import Lab

_task_ids = itertools.count(1)


def new_task_id(prefix: str = "task") -> str:
    """A task id unique within the process."""
    return f"{prefix}-{next(_task_ids)}"


def all_options(lab: Lab, **overrides: Any) -> dict[str, Any]:
    """Options with every step on, scanning exactly the lab's ports plus a few closed ones."""
    options: dict[str, Any] = {
        "domain_brute": True,
        "domain_brute_type": "small",
        "port_scan": True,
        "port_scan_type": "custom",
        "port_custom": lab.scan_ports,
        "service_detection": True,
        "site_identify": True,
        "ssl_cert": True,
        "file_leak": True,
    }
    options.update(overrides)
    return options


def in_lab_scope(host: str) -> bool:
    """The lab's scope: everything except the out-of-scope IPv6 address of mail/vpn.lab.test."""
    return not host.startswith("fd00:")
