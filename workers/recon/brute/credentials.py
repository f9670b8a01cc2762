"""Default credential lists: small bundled files per protocol, overridable by a directory of the same names.

A list is a text file of ``username:password`` lines, most likely first (``#`` starts a comment,
blank lines are skipped). The line is split at its first colon, so a password may hold colons and
either side may be empty (``:`` is "no username, empty password"). ``%user%`` in a password stands
for the line's username, as in ARL's dictionaries.
"""

from __future__ import annotations

from pathlib import Path

from workers.recon.brute.base import Credential
from workers.recon.datafiles import DATA_DIR

BUNDLED_DIR = DATA_DIR / "brute"
"""``workers/data/brute``: the bundled lists, shipped with the other data files."""


def parse_credentials(text: str) -> list[Credential]:
    """Parse a credential list (see the module docstring); duplicates are dropped, order kept."""
    out: list[Credential] = []
    seen: set[Credential] = set()
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, sep, password = line.partition(":")
        if not sep:
            raise ValueError(f"credential line without a colon: {line!r}")
        credential = Credential(username.strip(), password.replace("%user%", username.strip()))
        if credential not in seen:
            seen.add(credential)
            out.append(credential)
    return out


def list_path(name: str, override_dir: Path | None = None) -> Path:
    """The file of list ``name``: ``<override_dir>/<name>.txt`` when it exists, else the bundled one."""
    if override_dir is not None:
        candidate = Path(override_dir) / f"{name}.txt"
        if candidate.is_file():
            return candidate
    return BUNDLED_DIR / f"{name}.txt"


def load_credentials(name: str, override_dir: Path | None = None) -> list[Credential]:
    """Load credential list ``name`` (e.g. ``redis``), from ``override_dir`` when it has one."""
    return parse_credentials(list_path(name, override_dir).read_text(encoding="utf-8"))
