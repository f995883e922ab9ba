"""Wiring and serving: settings, the Starlette API, metrics and the command line."""
