"""Admin commands (promote, rollback, rollout, rollout stop): carried out by the learner,
sent by any serving process through the control topic.

The learner answers with a domain outcome, never an HTTP status: `done` with what it did,
or `refused` with why (`not_found`, `conflict`, `invalid`, `unavailable`); engine/api.py
maps those to statuses, as Starlette maps an HTTPException. The outcome travels back on
the models topic (the registry record's `applied`, by the command's id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine import metrics
from engine.settings import Settings
from models.learner import Learner
from models.registry import ModelRegistry, RegistryError
from models.rollout import Rollout

log = logging.getLogger(__name__)

APPLIED_KEPT = 50
Refusal = Literal["not_found", "conflict", "invalid", "unavailable"]


def new_command(action: str, model: str, **args: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "action": action, "model": model, **args}


def done(**what: Any) -> dict[str, Any]:
    return {"outcome": "done", **what}


def refused(why: Refusal, error: str) -> dict[str, Any]:
    return {"outcome": "refused", "refusal": why, "error": error}


def apply(
    command: dict[str, Any], learner: Learner, registry: ModelRegistry, named: str | None = None
) -> dict[str, Any]:
    """Carries out one command on the learner's model; its outcome. `named`: the name of the
    named model it learns (MODELS), which commands name; without one, commands name the
    serving model's factory."""
    action, name = command.get("action"), command.get("model")
    model = learner.model
    expected = named or model.name
    if name != expected:
        return refused("not_found", f"the serving model is {expected!r}, not {name!r}")
    try:
        if action == "promote":
            learner.replace_model(registry.promote(int(command["version"]), model))
        elif action == "rollback":
            learner.replace_model(registry.rollback(model))
        elif action == "rollout":
            challenger = registry.load(int(command["version"]))
            if challenger.task is not model.task:
                return refused("invalid", f"version {command['version']} is a {challenger.task.value} model")
            learner.rollout = Rollout(
                challenger,
                mode=command["mode"],
                share=command["share"],
                min_labels=command["min_labels"],
                margin=command["margin"],
            )
            return done(rollout=learner.rollout.status())
        elif action == "rollout_stop":
            rollout = learner.rollout
            if rollout is None:
                return refused("conflict", "no rollout is running")
            learner.rollout = None
            registry.annotate(rollout.challenger.version, rollout_result="stopped", rollout=rollout.status())
            return done(stopped=rollout.status())
        else:
            return refused("invalid", f"unknown action {action!r}")
    except RegistryError as exc:
        return refused("conflict", str(exc))
    except OSError as exc:  # the registry could not be written: nothing changed, try again
        metrics.LEARNER_ERRORS.labels("registry_" + type(exc).__name__).inc()
        return refused("unavailable", f"the model registry could not be written: {exc}")
    except (ValueError, KeyError, TypeError) as exc:
        return refused("invalid", str(exc))
    served = learner.model
    return done(serving={"name": served.name, "version": served.version, "samples_learned": served.samples_learned})


class ControlFollower:
    """Reads commands from every serving process and hands each to `run`, once, in order."""

    def __init__(self, settings: Settings, run: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.settings = settings
        self.run = run
        # Set once the consumer holds its partition and its position: from then on no command
        # is missed. It goes on from the group's committed offset, or from the end for a new
        # group (commands from before the engine's first start are not carried out); the
        # learner waits for this before it publishes, and so before serving processes see it
        # and send commands.
        self.listening = asyncio.Event()

    async def follow(self) -> None:
        # Assigned, not subscribed: the group only keeps the committed position. Joining it
        # would make a learner restarted after a kill -9 wait for its dead predecessor's
        # session to time out (seconds) before it could publish or learn.
        topic = self.settings.control_topic
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.control_group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            consumer.assign([TopicPartition(topic, partition) for partition in sorted(partitions)])
            for tp in consumer.assignment():
                await consumer.position(tp)
            self.listening.set()
            while True:
                await self._run_all(consumer, await consumer.getmany(timeout_ms=1000))
        finally:
            await consumer.stop()

    async def _run_all(self, consumer: AIOKafkaConsumer, batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                try:
                    command = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    command = None
                if not isinstance(command, dict):
                    log.warning("ignoring an unreadable control command: %r", (record.value or b"")[:200])
                    continue
                try:
                    await self.run(command)
                except Exception as exc:  # noqa: BLE001 - policy: one failed command does not stop the others
                    metrics.LEARNER_ERRORS.labels("command_" + type(exc).__name__).inc()
                    log.error("admin command %s failed: %r", command, exc)
        if batch:
            await consumer.commit()
