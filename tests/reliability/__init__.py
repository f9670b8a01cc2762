"""Reliability under real faults (GitHub issue 4)."""
