"""Control plane for Celery reconnaissance tasks: REST API, live feed, durable store."""

__version__ = "0.1.0"
