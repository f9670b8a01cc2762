"""The workers' Celery app for Celery's own command line: ``celery -A workers inspect ping``.

``celery -A workers`` looks for this module.  It builds the app once, at import, from the
config every ``controlplane`` process reads (the file named by ``CONTROLPLANE_CONFIG``, then
``CP_*`` variables), so ``inspect``, ``control`` and ``events`` reach the same broker, queues
and task names as the deployment::

    CONTROLPLANE_CONFIG=config.yaml celery -A workers inspect active_queues

Run workers with ``controlplane worker`` (it adds the revoke preload and the orphan reaper).
"""

from __future__ import annotations

from controlplane.config import load_config
from workers.app import make_worker_app

app = make_worker_app(load_config(None))
