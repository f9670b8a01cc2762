"""Endpoints about the API itself: health, the OpenAPI document and who is calling.

Health and the OpenAPI document are public and reveal nothing about tasks.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.handlers.base import APIHandler
from controlplane.service import openapi


class HealthHandler(APIHandler):
    """GET /api/health/: this process answers (no database or broker call, no task data).

    ``auth`` says whether requests need a token (``token``) or not (``none``, with
    ``auth.enabled: false``), so that a UI knows whether to ask for one; a request without
    a token would tell anyone the same.
    """

    public = True

    def get(self) -> None:
        self.reply({"status": "ok", "auth": "token" if self.settings["cp_auth"].enabled else "none"})


class OpenAPIHandler(APIHandler):
    """GET /api/openapi.json: the OpenAPI 3.1 description of every route."""

    public = True

    def get(self) -> None:
        settings = self.application.settings
        doc = settings.get("cp_openapi_doc")
        if doc is None:
            doc = settings["cp_openapi_doc"] = json.dumps(self._build(), ensure_ascii=False)
        self.finish(doc)

    def _build(self) -> dict[str, Any]:
        rules = self.application.wildcard_router.rules
        templates = [openapi.template_of(getattr(rule.matcher, "regex").pattern) for rule in rules]  # noqa: B009
        manager = self.services.get("manager")
        task_types = list(manager.types()) if manager is not None else []
        return openapi.build(templates, task_types)


class WhoAmIHandler(APIHandler):
    """GET /api/whoami/: the calling token's name and role (any valid token; for UIs)."""

    def get(self) -> None:
        principal = self.principal
        assert principal is not None
        self.reply({"name": principal.name, "role": principal.role})
