"""Flower's Celery app in the benchmarks: the same task names as ours, no result backend.

Loaded by Flower from bench/.flower-venv (``celery -A flower_app flower``); the broker comes
from the command line.  Tasks submitted through Flower go to the ``bench-flower`` queue
unless the request names another (the revoke benchmark sends them to our worker's queue).
"""

from celery import Celery

app = Celery("flower_app")
app.conf.task_default_queue = "bench-flower"
app.conf.task_ignore_result = True

TASK_TYPES = (
    "domain_task",
    "ip_task",
    "site_task",
    "run_risk_cruising",
    "fofa_task",
    "github_task",
    "spawn_task",
    "sleep_task",
)


def _make(task_type):
    @app.task(name=f"controlplane.{task_type}")
    def task(*args, **kwargs):
        return None

    return task


for _name in TASK_TYPES:
    _make(_name)
