"""The brute plugins by ARL ``plugin_name``, and ARL's other brute plugin names with why they don't run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workers.recon.brute.base import BrutePlugin
from workers.recon.brute.ftp import FTPBrute
from workers.recon.brute.mail import IMAPBrute, POP3Brute, SMTPBrute
from workers.recon.brute.mongodb import MongoDBBrute
from workers.recon.brute.mssql import SQLServerBrute
from workers.recon.brute.mysql import MysqlBrute
from workers.recon.brute.postgres import PostgreSQLBrute
from workers.recon.brute.redis import RedisBrute
from workers.recon.brute.ssh import SSH_UNAVAILABLE, SSHBrute
from workers.recon.brute.web import ActiveMQBrute, TomcatBrute
from workers.recon.brute.webapps import (
    AlibabaDruidBrute,
    APISIXBrute,
    ClickhouseBrute,
    GrafanaBrute,
    JenkinsBrute,
    NacosBrute,
)

PLUGINS: dict[str, Callable[[], BrutePlugin]] = {
    cls.plugin_name: cls
    for cls in (
        RedisBrute,
        FTPBrute,
        MysqlBrute,
        PostgreSQLBrute,
        TomcatBrute,
        MongoDBBrute,
        POP3Brute,
        IMAPBrute,
        SMTPBrute,
        ActiveMQBrute,
        ClickhouseBrute,
        GrafanaBrute,
        NacosBrute,
        APISIXBrute,
        AlibabaDruidBrute,
        SQLServerBrute,
        JenkinsBrute,
    )
}
"""Implemented plugins: name to factory (a new instance per run, since some remember per-port facts)."""
if SSH_UNAVAILABLE is None:
    PLUGINS[SSHBrute.plugin_name] = SSHBrute

_NOT_IMPLEMENTED = "not implemented by this worker"
UNSUPPORTED: dict[str, str] = {
    "RDPBrute": _NOT_IMPLEMENTED + " (RDP/CredSSP login)",
    "ExchangeBrute": _NOT_IMPLEMENTED + " (web application login)",
    "GitlabBrute": _NOT_IMPLEMENTED + " (web application login)",
    "HarborBrute": _NOT_IMPLEMENTED + " (web application login)",
    "ManageIQBrute": _NOT_IMPLEMENTED + " (web application login)",
    "NexusBrute": _NOT_IMPLEMENTED + " (web application login)",
    "OpenfireBrute": _NOT_IMPLEMENTED + " (web application login)",
    "CobaltStrikeBrute": _NOT_IMPLEMENTED + " (team server login)",
    "Shiro_CBC_Brute": "a key search, not a credential check: not implemented by this worker",
    "Shiro_GCM_Brute": "a key search, not a credential check: not implemented by this worker",
}
"""ARL's other brute plugin names: known, so not "unknown", but they do not run here (reported by name)."""
if SSH_UNAVAILABLE is not None:
    UNSUPPORTED["SSHBrute"] = SSH_UNAVAILABLE


def plugin_names() -> list[str]:
    """The names of the plugins that run here, sorted."""
    return sorted(PLUGINS)


def resolve_plugins(names: Iterable[str]) -> tuple[list[BrutePlugin], list[str], dict[str, str]]:
    """Split requested names into new plugin instances, unknown names and ``{name: reason}`` (unsupported).

    Order is kept and repeats are dropped.
    """
    plugins: list[BrutePlugin] = []
    unknown: list[str] = []
    unsupported: dict[str, str] = {}
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if name in PLUGINS:
            plugins.append(PLUGINS[name]())
        elif name in UNSUPPORTED:
            unsupported[name] = UNSUPPORTED[name]
        else:
            unknown.append(name)
    return plugins, unknown, unsupported


def enabled_plugins(brute_config: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """The plugin names ARL's ``brute_config`` enables: items ``{"plugin_name": str, "enable": bool}``.

    As ARL's task code (``if not x.get("enable"): continue``), an item without a true ``enable`` is
    skipped, whatever its API model's documented default says; items without a name are skipped too.
    """
    names: list[str] = []
    for item in brute_config or []:
        name = item.get("plugin_name")
        if isinstance(name, str) and name and item.get("enable"):
            names.append(name)
    return names


def plugins_for_options(options: Mapping[str, Any]) -> list[str]:
    """The plugin names a task's options ask for.

    ``brute_config`` (ARL's list) decides when present; without it, ARL's older boolean
    ``service_brute: true`` is read as "every plugin this worker has" (this worker's reading: ARL
    itself documents no meaning for it).
    """
    if options.get("brute_config"):
        return enabled_plugins(options["brute_config"])
    return plugin_names() if options.get("service_brute") else []
