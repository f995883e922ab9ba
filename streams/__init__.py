"""Kafka in, online features out: contracts, validation, feature logic, the join, the
feature store and the read replicas.

The event, join and feature logic (records.py, events.py, join.py, features.py) is plain
Python that does not import faust, so it is unit-testable and reusable offline; only
batch_consumer.py builds on Faust.
"""
