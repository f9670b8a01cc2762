"""Raw network exchanges shared by the template engine and webhooks (:mod:`workers.recon.poc.net`).

The template engine itself is :mod:`workers.recon.nuclei`.
"""
