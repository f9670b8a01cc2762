"""controlplane/runtime."""
