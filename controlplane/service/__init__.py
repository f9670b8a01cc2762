"""controlplane/service."""
