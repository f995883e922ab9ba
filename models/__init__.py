"""River models and their lifecycle. Imports nothing else of ours and does no network I/O."""
