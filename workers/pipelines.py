"""Pipelines of the spec's task types, one function per type value.

A type without a function here fails loudly (see :mod:`workers.tasks`).
Recon pipelines are added by the recon engine modules.
"""
