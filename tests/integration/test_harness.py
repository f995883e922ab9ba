"""The harness cleans up after the engines it starts: their topics, and nobody else's."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from engine.harness import (
    KAFKA_BOOTSTRAP,
    EngineProcess,
    create_topics,
    delete_topics,
    remove_topics,
    topic_names,
    unique_env,
)

pytestmark = pytest.mark.integration


def test_removing_an_engines_topics_leaves_every_other_topic(tmp_path):
    engine = EngineProcess(unique_env(MODELS="fraud=logreg"), tmp_path / "engine")
    s = engine.settings
    named = s.for_model(s.model)
    mine = [
        s.events_topic,
        s.dlq_events_topic,
        s.labels_topic,
        named.examples_topic,
        s.models_topic,
        s.entity_changelog_topic,
    ]
    another_engine = EngineProcess(unique_env(), tmp_path / "another").settings.events_topic
    a_users = f"events-of-a-user-{uuid.uuid4().hex[:6]}"  # no engine of the harness made it
    asyncio.run(create_topics(KAFKA_BOOTSTRAP, [*mine, another_engine, a_users]))
    try:
        assert sorted(remove_topics([engine])) == sorted(mine)
        deadline = time.monotonic() + 15
        while set(mine) & asyncio.run(topic_names(KAFKA_BOOTSTRAP)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = asyncio.run(topic_names(KAFKA_BOOTSTRAP))
        assert not set(mine) & left
        assert {another_engine, a_users} <= left
    finally:
        asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [another_engine, a_users]))
