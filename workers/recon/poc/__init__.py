"""The PoC engine behind ``run_risk_cruising``: declarative YAML PoCs, matchers, a bounded runner.

Load PoCs with :func:`load_pocs` (bundled folder ``workers/data/pocs`` plus configured folders),
pick them with :func:`select_pocs`, run them with :class:`PocRunner`.
"""

from workers.recon.poc.engine import Finding, PocRunner, PocTarget, parse_target
from workers.recon.poc.model import Poc, PocError, load_pocs, parse_poc, select_pocs

__all__ = [
    "Finding",
    "Poc",
    "PocError",
    "PocRunner",
    "PocTarget",
    "load_pocs",
    "parse_poc",
    "parse_target",
    "select_pocs",
]
