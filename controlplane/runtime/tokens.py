"""``controlplane token create``: a new API token, printed once, with the entry to configure."""

from __future__ import annotations

import sys
from typing import TextIO

import yaml

from controlplane.config import Config
from controlplane.service.auth import append_token, new_token, token_entry, token_file_path


def create_token(
    config: Config, name: str, role: str, *, write: bool = False, out: TextIO | None = None
) -> int:
    """Print a new token and its ``auth.tokens`` entry; with ``write``, add it to the token file too."""
    out = out or sys.stdout
    name = name.strip()
    if not name or len(name) > 64 or any(ord(c) < 32 for c in name):
        print("controlplane: --name must be 1..64 printable characters", file=sys.stderr)
        return 2
    token = new_token()
    entry = token_entry(name, role, token)
    out.write(f"token (shown once, store it now): {token}\n\n")
    if write:
        path = token_file_path(config)
        append_token(path, entry)
        out.write(f"added to {path} (mode 600); restart `controlplane serve` to load it\n")
    else:
        out.write("add this entry to config.yaml under auth.tokens (it holds only the salted hash):\n\n")
        block = yaml.safe_dump({"auth": {"tokens": [entry]}}, sort_keys=False, width=200)
        out.write(block)
    out.flush()
    return 0
