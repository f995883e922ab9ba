"""Kafka in, online features out: contracts, validation, feature logic and the Faust app.

Everything here except `app.py` is plain Python that does not import faust, so it is
unit-testable and reusable offline.
"""
