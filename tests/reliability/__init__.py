"""Reliability under real faults: each test is a row of the table in docs/reliability.md."""
