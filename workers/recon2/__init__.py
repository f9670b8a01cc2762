"""Recon engine II: asset scopes' sites, Web Info Hunter, GitHub code search, monitoring passes.

The task functions live in :mod:`workers.recon2_pipeline`; this package holds the library:
:mod:`runtime` (stop/progress handling, scoped host resolution, tagged result collections),
:mod:`sitefetch` and :mod:`siteassets` / :mod:`sitetasks` (site assets), :mod:`risk` (PoC runs),
:mod:`wih` / :mod:`wihtask` (Web Info Hunter), :mod:`github` / :mod:`githubtask`, :mod:`monitor`
and :mod:`webhook`.
"""
