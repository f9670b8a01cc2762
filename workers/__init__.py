"""Celery side of the control plane: the app, the task base class and the task types."""
