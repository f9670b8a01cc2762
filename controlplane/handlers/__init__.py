"""Tornado request handlers: thin layers that parse, authorize, call the manager and wrap."""
