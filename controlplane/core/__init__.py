"""controlplane/core."""
