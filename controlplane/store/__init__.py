"""controlplane/store."""
