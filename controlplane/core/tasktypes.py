"""The registry of task types: the spec's twelve, plus extra types from config.

Each type has its spec value and Chinese label, the Celery task name workers
register it under, the document defaults (``type``, ``task_tag``) used when
the submitted ``data`` does not give them, and where its ``data`` may carry
credentials (shown redacted by every output, see :mod:`controlplane.core.redact`).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.config import Config


@dataclass(frozen=True)
class TaskType:
    """One task type: ``value`` as in the spec, ``label`` its display name.

    ``credentials`` are dotted paths in the task's ``data`` whose values are secrets
    (shown as a marker, never their value); ``credential_urls`` are paths of URLs
    that may embed one (shown as their origin only).  Extra types declare none: the
    generic name rules of :mod:`controlplane.core.redact` cover them, as they cover
    every type.
    """

    value: str
    label: str
    kind: str
    task_tag: str
    builtin: bool = True
    credentials: tuple[str, ...] = ()
    credential_urls: tuple[str, ...] = ()

    @property
    def celery_name(self) -> str:
        """Name the worker registers the Celery task under."""
        return f"controlplane.{self.value}"


# The FOFA account of a fofa_task (else recon.fofa_email / recon.fofa_key).
_FOFA_ACCOUNT = ("options.key", "options.email")
# A GitHub token: no GitHub type accepts one per task today (recon.github_token is used),
# declared so that one added later is redacted from its first day.
_GITHUB_TOKEN = ("options.token", "options.github_token")
# Where a scheduled type posts its new findings; the URL itself often is the secret.
_WEBHOOK = ("webhook",)

SPEC_TYPES: tuple[TaskType, ...] = (
    TaskType("domain_task", "常规域名任务", "domain", "task"),
    TaskType("ip_task", "常规IP任务", "ip", "task"),
    TaskType("run_risk_cruising", "PoC运行任务", "risk_cruising", "risk_cruising"),
    TaskType("domain_task_sync_task", "域名同步任务", "domain", "task"),
    TaskType("fofa_task", "Fofa查询任务", "fofa", "task", credentials=_FOFA_ACCOUNT),
    TaskType("domain_exec_task", "域名监测任务", "domain", "monitor", credential_urls=_WEBHOOK),
    TaskType("ip_exec_task", "IP监测任务", "ip", "monitor", credential_urls=_WEBHOOK),
    TaskType("github_task_task", "Github泄露任务", "github", "github", credentials=_GITHUB_TOKEN),
    TaskType(
        "github_task_monitor",
        "Github泄露监控任务",
        "github",
        "monitor",
        credentials=_GITHUB_TOKEN,
        credential_urls=_WEBHOOK,
    ),
    TaskType("asset_site_update", "资产站点更新任务", "asset_site", "task", credential_urls=_WEBHOOK),
    TaskType("add_asset_site_task", "资产站点添加任务", "asset_site", "task"),
    TaskType("asset_wih_update", "资产WIH更新任务", "asset_wih", "task", credential_urls=_WEBHOOK),
)
SPEC_BY_VALUE: dict[str, TaskType] = {t.value: t for t in SPEC_TYPES}


class Registry:
    """Task types known to this deployment, in a stable order (spec first)."""

    def __init__(self, types: list[TaskType]) -> None:
        self._types = {t.value: t for t in types}

    @classmethod
    def from_config(cls, config: Config) -> Registry:
        """The spec's types plus every ``tasks.<name>`` entry that names a ``task`` callable."""
        types = list(SPEC_TYPES)
        spec_values = {t.value for t in SPEC_TYPES}
        for name, tc in sorted(config.tasks.items()):
            if name in spec_values or not tc.task:
                continue
            types.append(TaskType(name, tc.label or name, "custom", "task", builtin=False))
        return cls(types)

    def get(self, value: str) -> TaskType | None:
        """The type with that value, or None."""
        return self._types.get(value)

    def values(self) -> list[str]:
        """Every type value, spec order first."""
        return list(self._types)

    def labels(self) -> dict[str, str]:
        """``{value: label}`` as the types endpoint returns it."""
        return {t.value: t.label for t in self._types.values()}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._types.values())

    def __contains__(self, value: object) -> bool:
        return value in self._types
