"""What the tests share, defined once: rows of a bundled dataset per task, a model trained
as the engine trains it, the bytes of events and labels as producers send them, and the
references the engine must match (River's own progressive_val_score, the feature replay)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import orjson
from river import datasets, evaluate

from models.factory import Task, build_model
from models.online import OnlineModel
from streams.features import FeatureRegistry, apply_event

# One bundled dataset per task, for suites that run over every model the factory builds.
DATASET_FOR = {
    Task.BINARY: datasets.Phishing,
    Task.MULTICLASS: datasets.ImageSegments,
    Task.REGRESSION: datasets.TrumpApproval,
}

Rows = list[tuple[dict[str, Any], Any]]


def task_rows(task: Task, n: int | None = None) -> Rows:
    """The first `n` (x, y) rows of the task's dataset (all of them without `n`)."""
    return list(itertools.islice(DATASET_FOR[task](), n))


def trained(rows: Iterable[tuple[dict[str, Any], Any]], name: str = "logreg") -> OnlineModel:
    """An OnlineModel that learned `rows` as the engine learns: predict, then learn."""
    model = OnlineModel(name)
    for x, y in rows:
        model.learn(x, y, model.predict(x))
    return model


def event(event_id: Any, entity_id: str, features: dict[str, Any], ts: float = 1_700_000_000.0, **extra: Any) -> bytes:
    """An event as a producer sends it; `label=...` in `extra` makes it an inline-labelled one."""
    return orjson.dumps({"event_id": str(event_id), "entity_id": entity_id, "ts": ts, "features": features, **extra})


def label(event_id: Any, y: Any) -> bytes:
    """A label on the labels topic."""
    return orjson.dumps({"event_id": str(event_id), "label": y})


def dataset_messages(
    rows: Iterable[tuple[dict[str, Any], Any]], inline_labels: bool = True
) -> list[tuple[bytes, bytes]]:
    """(key, value) messages for the events topic from engine.publish.dataset_events rows,
    keyed by entity id, with the label inside the event unless `inline_labels` is False."""
    return [(e["entity_id"].encode(), orjson.dumps({**e, "label": y} if inline_labels else e)) for e, y in rows]


def progressive_metrics(
    model_name: str, rows: Iterable[tuple[dict[str, Any], Any]], delay: int | None = None
) -> dict[str, float]:
    """River's own progressive_val_score for each metric the engine reports for `model_name`
    (each metric in a run of its own, as a River user would compute it)."""
    rows = list(rows)
    values = {}
    for name, metric in OnlineModel(model_name).metrics.items():
        fresh = type(metric)()
        evaluate.progressive_val_score(rows, build_model(model_name), fresh, delay=delay)
        values[name] = float(fresh.get())
    return values


def replay_features(
    definitions: list[dict[str, Any]], events: Iterable[dict[str, Any]]
) -> tuple[list[dict], dict[str, dict]]:
    """The online feature rows a stream of events leaves, by the engine's own pure functions:
    (each event's entity row just after that event, in order; every entity's last row)."""
    aggregates = FeatureRegistry(definitions).aggregates
    states: dict[str, dict] = {}
    after: list[dict] = []
    for e in events:
        states[e["entity_id"]] = apply_event(states.get(e["entity_id"]), e["ts"], e["features"], aggregates)
        after.append(states[e["entity_id"]])
    return after, states


class LearningOnly:
    """A model lane's models that only learn (the join's half of a worker): each example to `learn`."""

    version = 1
    samples = 0

    def __init__(self, learn: Any) -> None:
        self.learn = learn


def learning_lanes(learn: Any, name: str = "logreg", target: str | None = None) -> list[Any]:
    from models.named import NamedModel
    from streams.events import ModelLane

    return [ModelLane(NamedModel(name, "logreg", target), LearningOnly(learn))]


# Three named models, two targets: a classifier and a tree on the class, a regressor on a score.
NAMED_MODELS = "clf=logreg@is_phishing,tree=hoeffding@is_phishing,score=linreg@score"
NAMED_FACTORIES = {"clf": "logreg", "tree": "hoeffding", "score": "linreg"}
NAMED_TARGETS = {"clf": "is_phishing", "tree": "is_phishing", "score": "score"}


def score_of(row: dict[str, Any]) -> float:
    """A regression target the Phishing features explain (a deterministic function of them);
    `row`: the features, or an event that holds them."""
    features = row.get("features", row)
    return 4 * features["is_popular"] + features["long_url"] - 2 * features["https"] + features["age_of_domain"]


def named_labels(rows: Rows, score_every: int = 7) -> Rows:
    """Phishing rows with object labels: every row has its class; all but every
    `score_every`-th have the score (those teach the regressor nothing)."""
    return [
        (x, {"is_phishing": y, **({"score": score_of(x)} if i % score_every else {})}) for i, (x, y) in enumerate(rows)
    ]


def rows_for(named: str, rows: Rows) -> Rows:
    """What River's progressive_val_score of one named model sees: the rows with its target."""
    target = NAMED_TARGETS[named]
    return [(x, y[target]) for x, y in rows if target in y]
