"""Passive subdomain sources (ARL's ``dns_query_plugin`` option) behind one small interface.

:func:`query_sources` asks every enabled source in :data:`REGISTRY` about the roots and
returns a :class:`SourceReport`; :class:`SourcesSettings` and :class:`SourceConfig` are
what the pipeline builds from config.  A new source is a :class:`Source` subclass added
to the registry.
"""

from workers.recon.sources.base import (
    Source,
    SourceAuthError,
    SourceConfig,
    SourceError,
    SourceQuotaError,
    SourceRateLimited,
    SourcesSettings,
)
from workers.recon.sources.registry import REGISTRY, SourceReport, query_sources, source_names

__all__ = [
    "REGISTRY",
    "Source",
    "SourceAuthError",
    "SourceConfig",
    "SourceError",
    "SourceQuotaError",
    "SourceRateLimited",
    "SourceReport",
    "SourcesSettings",
    "query_sources",
    "source_names",
]
