"""The engine's one error base.

A leaf module (it imports nothing of ours) so that every layer can derive from it:
`models/` may import nothing else of ours, and `streams/` and `engine/` build on `models/`.
"""


class EngineError(Exception):
    """Every error the engine raises on purpose derives from this, so one `except EngineError`
    catches them all; anything else that escapes is a bug (or a library's own error)."""


class ModelError(EngineError):
    """The model cannot answer for this input: predicting raised, or answered a NaN or an
    infinite number (see models.online.checked_predict, the one rule for a usable answer)."""
