"""Weak-credential checks on the services a task found (ARL's ``brute_config``): plugins, lists, runner."""

from workers.recon.brute.base import BrutePlugin, Credential, Finding, Probe, ProbedPlugin
from workers.recon.brute.credentials import load_credentials, parse_credentials
from workers.recon.brute.registry import (
    PLUGINS,
    UNSUPPORTED,
    enabled_plugins,
    plugin_names,
    plugins_for_options,
    resolve_plugins,
)
from workers.recon.brute.runner import BruteReport, run_brute, targets_from_ports

__all__ = [
    "PLUGINS",
    "UNSUPPORTED",
    "BrutePlugin",
    "BruteReport",
    "Credential",
    "Finding",
    "Probe",
    "ProbedPlugin",
    "enabled_plugins",
    "load_credentials",
    "parse_credentials",
    "plugin_names",
    "plugins_for_options",
    "resolve_plugins",
    "run_brute",
    "targets_from_ports",
]
