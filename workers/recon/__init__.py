"""Reconnaissance library behind the ``domain_task`` and ``ip_task`` task types.

Call :func:`run_domain_task` or :func:`run_ip_task` with a :class:`ReconContext`; see ``scan.py``.
"""

from workers.recon.context import ReconContext
from workers.recon.scan import run_domain_task, run_ip_task

__all__ = ["ReconContext", "run_domain_task", "run_ip_task"]
