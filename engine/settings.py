"""Settings, read once from environment variables into a frozen object.

Pass any mapping to `Settings.from_env` (tests do); the process passes `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from models.errors import EngineError
from models.factory import UnknownModelError, get_spec
from models.named import ModelsError, NamedModel, parse_models


class SettingsError(EngineError, ValueError):
    pass


def _env(name: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": name, "help": help})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _env("KAFKA_BOOTSTRAP", "localhost:9092", "Kafka bootstrap servers")
    redis_url: str = _env(
        "REDIS_URL", "redis://localhost:6379/0", "Redis for the shared (L2) prediction cache; empty = none"
    )
    api_host: str = _env("API_HOST", "127.0.0.1", "address the HTTP API binds")
    api_port: int = _env("API_PORT", 8000, "port of the HTTP API")
    grpc_port: int = _env("GRPC_PORT", 8001, "port of the Open Inference Protocol over gRPC; 0 = off")
    app_id: str = _env("APP_ID", "rtml", "Faust app id: consumer group and changelog topic prefix")
    events_topic: str = _env("EVENTS_TOPIC", "events", "topic of events (key = entity id)")
    labels_topic: str = _env("LABELS_TOPIC", "labels", "topic of delayed labels")
    topic_partitions: int = _env("TOPIC_PARTITIONS", 1, "partitions of the events topic and of the tables")
    model_name: str = _env("MODEL", "logreg", "model from the factory (see GET /models)")
    models_declared: str = _env(
        "MODELS",
        "",
        "several named models on the stream: name=factory[@target],... (the first is the default); empty = MODEL alone",
    )
    learn_model: str = _env(
        "LEARN_MODEL", "", "the model `engine learn` learns (one process per model); empty = the only one"
    )
    fallback_model: str = _env(
        "FALLBACK_MODEL", "", "simpler model learning alongside each model of its task, answering when that one cannot"
    )
    feature_definitions: str = _env("FEATURES_FILE", "", "JSON file of feature definitions; empty = raw features only")
    max_message_bytes: int = _env("MAX_MESSAGE_BYTES", 65536, "larger messages go to the dead-letter topic")
    max_feature_magnitude: float = _env(
        "MAX_FEATURE_MAGNITUDE", 1e15, "numbers (features, targets) beyond this absolute value are out_of_range"
    )
    max_id_length: int = _env("MAX_ID_LENGTH", 256, "longest event id or entity id, in characters")
    max_features_per_event: int = _env(
        "MAX_FEATURES_PER_EVENT", 256, "an event (or a request) with more feature names is out_of_range"
    )
    max_model_features: int = _env(
        "MAX_MODEL_FEATURES",
        10_000,
        "distinct feature names a model learns; past it, new names are left out of what the model sees",
    )
    max_event_time_ahead_seconds: float = _env(
        "MAX_EVENT_TIME_AHEAD_SECONDS", 86_400.0, "an event whose ts is further ahead of the wall clock is out_of_range"
    )
    dedupe_window: int = _env("DEDUPE_WINDOW", 100_000, "recent event ids remembered to reject duplicates")
    pending_ttl_seconds: float = _env("PENDING_TTL_SECONDS", 86_400.0, "how long a prediction waits for its label")
    pending_max: int = _env("PENDING_MAX", 1_000_000, "most predictions waiting for labels; oldest expire first")
    early_label_grace_seconds: float = _env(
        "EARLY_LABEL_GRACE_SECONDS", 30.0, "how long a label waits for its event before it is dead-lettered"
    )
    # A batch's fixed costs (its ordered sends, the model checks at its end) and its
    # changelog (one record per entity changed in it) are shared by more events in larger
    # batches: over a backlog 4,000 learned 1.3-1.5x as fast as 1,000, and 12,000 (with a
    # fetch that holds them) faster than 4,000 in each of eight alternated rounds (by 7 %
    # at the median). Live, a batch holds what arrived since the last one, far fewer.
    stream_batch_size: int = _env(
        "STREAM_BATCH_SIZE", 12_000, "most records one fetch hands to a batch (max_poll_records)"
    )
    serve_processes: int = _env("SERVE_PROCESSES", 1, "serving processes `engine run` starts, sharing API_PORT")
    learner: str = _env(
        "LEARNER",
        "embedded",
        "`engine run`'s learner: embedded (in the stream worker) or apart (a process of its own per model)",
    )
    model_publish_every_labels: int = _env(
        "MODEL_PUBLISH_EVERY_LABELS", 10_000, "publish the model to serving after this many labels learned"
    )
    model_publish_every_seconds: float = _env(
        "MODEL_PUBLISH_EVERY_SECONDS",
        1.0,
        "or at most this long after something was learned (sooner when publishing is cheap: see the next)",
    )
    model_publish_min_seconds: float = _env(
        "MODEL_PUBLISH_MIN_SECONDS",
        0.05,
        "publish as often as every max(this, 20 x the time pickling the model takes)",
    )
    worker_id: str = _env(
        "WORKER_ID",
        "0",
        "this stream worker's stable name in its group (static membership: a restart gets its partitions back at once)",
    )
    table_store: str = _env(
        "TABLE_STORE",
        "rocksdb",
        "where a worker keeps the feature table: rocksdb (local disk: a restart reads only the changelog's tail)"
        " or memory",
    )
    table_cache_rows: int = _env(
        "TABLE_CACHE_ROWS",
        100_000,
        "with TABLE_STORE=rocksdb, how many entities' rows a worker keeps decoded in memory (the ones"
        " updated most recently); the others are read from disk when their entity comes back",
    )
    worker_lagging_events: int = _env(
        "WORKER_LAGGING_EVENTS", 10_000, "/readyz calls a worker lagging when it trails its topics by more records"
    )
    standby_replicas: int = _env(
        "STANDBY_REPLICAS", 0, "standby copies of each feature table partition on other workers"
    )
    cache_l1_entries: int = _env("CACHE_L1_ENTRIES", 100_000, "in-process cache size; 0 turns L1 off")
    cache_l1_bytes: int = _env(
        "CACHE_L1_BYTES", 64 * 1024 * 1024, "in-process cache size in bytes (keys, values, bookkeeping)"
    )
    cache_l2: str = _env(
        "CACHE_L2",
        "auto",
        "when to ask Redis: auto (only when the model predicts slower than a Redis round trip), always, never",
    )
    cache_ttl_seconds: float = _env("CACHE_TTL_SECONDS", 30.0, "how long a cached prediction may be served")
    redis_timeout_seconds: float = _env(
        "REDIS_TIMEOUT_SECONDS", 0.005, "longest wait on Redis before serving without it"
    )
    redis_backoff_seconds: float = _env("REDIS_BACKOFF_SECONDS", 1.0, "how long Redis is skipped after an error")
    predict_deadline_seconds: float = _env(
        "PREDICT_DEADLINE_SECONDS", 0.05, "a primary prediction slower than this opens the breaker"
    )
    breaker_cooldown_seconds: float = _env(
        "BREAKER_COOLDOWN_SECONDS", 5.0, "how long predictions go to the fallback after a slow one"
    )
    offline_flush_seconds: float = _env(
        "OFFLINE_FLUSH_SECONDS", 10.0, "how often feature updates are appended to the offline Parquet log"
    )
    snapshot_every_labels: int = _env("SNAPSHOT_EVERY_LABELS", 10_000, "snapshot after this many labels learned")
    snapshot_every_seconds: float = _env("SNAPSHOT_EVERY_SECONDS", 30.0, "or after this long, if anything was learned")
    snapshot_retention: int = _env("SNAPSHOT_RETENTION", 5, "snapshots kept on disk")
    snapshot_dir: str = _env("SNAPSHOT_DIR", "", "where snapshots go; empty = $STATE_DIR/snapshots")
    kafka_session_timeout_seconds: float = _env(
        "KAFKA_SESSION_TIMEOUT_SECONDS", 10.0, "how long a dead engine keeps its partitions"
    )
    rollout_min_labels: int = _env(
        "ROLLOUT_MIN_LABELS", 1000, "labels a shadow/canary is scored on before the decision"
    )
    rollout_margin: float = _env("ROLLOUT_MARGIN", 0.0, "how much better the challenger's primary metric must be")
    admin_token: str = _env("ADMIN_TOKEN", "", "bearer token for promote/rollback; empty = admin routes off")
    labels_token: str = _env("LABELS_TOKEN", "", "bearer token POST /labels requires; empty = open")
    served_log_buffer: int = _env(
        "SERVED_LOG_BUFFER",
        10_000,
        "served predictions with an event_id waiting to be sent to Kafka; past it they go unlogged",
    )
    state_dir: str = _env("STATE_DIR", ".state/engine", "local state of the engine")
    log_level: str = _env("LOG_LEVEL", "info", "log level")
    # Not read from the environment: the one model these settings are for (see for_model).
    named_model: NamedModel | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if "env" not in f.metadata:
                continue
            default = f.default
            assert default is not MISSING  # every setting is declared with `_env`, which gives it a default
            raw = env.get(f.metadata["env"])
            # An empty string is a value for text settings (REDIS_URL= turns Redis off).
            if raw is None or (raw == "" and not isinstance(default, str)):
                continue
            try:
                values[f.name] = type(default)(raw)
            except ValueError:
                raise SettingsError(f"{f.metadata['env']}={raw!r} is not a valid {type(default).__name__}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.stream_batch_size < 1:
            raise SettingsError("STREAM_BATCH_SIZE must be at least 1")
        if self.topic_partitions < 1:
            raise SettingsError("TOPIC_PARTITIONS must be at least 1")
        if self.table_store not in ("rocksdb", "memory"):
            raise SettingsError("TABLE_STORE must be rocksdb or memory")
        if self.table_cache_rows < 1:
            raise SettingsError("TABLE_CACHE_ROWS must be at least 1")
        if self.cache_l2 not in ("auto", "always", "never"):
            raise SettingsError("CACHE_L2 must be auto, always or never")
        if self.serve_processes < 1:
            raise SettingsError("SERVE_PROCESSES must be at least 1")
        if self.learner not in ("embedded", "apart"):
            raise SettingsError("LEARNER must be embedded or apart")
        if self.model_publish_every_labels < 1 or not self.model_publish_every_seconds > 0:
            raise SettingsError("MODEL_PUBLISH_EVERY_LABELS and MODEL_PUBLISH_EVERY_SECONDS must be positive")
        if not self.model_publish_min_seconds > 0:
            raise SettingsError("MODEL_PUBLISH_MIN_SECONDS must be positive")
        # Written `not x > 0` so that NaN, which fails every comparison, is refused too.
        if not self.max_feature_magnitude > 0:
            raise SettingsError("MAX_FEATURE_MAGNITUDE must be a positive number")
        if self.max_id_length < 1:
            raise SettingsError("MAX_ID_LENGTH must be at least 1")
        if self.max_features_per_event < 1 or self.max_model_features < 1:
            raise SettingsError("MAX_FEATURES_PER_EVENT and MAX_MODEL_FEATURES must be at least 1")
        if not self.max_event_time_ahead_seconds >= 0:
            raise SettingsError("MAX_EVENT_TIME_AHEAD_SECONDS must be a number of seconds, 0 or more")
        if self.served_log_buffer < 1:
            raise SettingsError("SERVED_LOG_BUFFER must be at least 1")
        if self.cache_l1_bytes < 1:
            raise SettingsError("CACHE_L1_BYTES must be at least 1 (CACHE_L1_ENTRIES=0 turns L1 off)")
        try:
            models = self.models
            if self.fallback_model:
                get_spec(self.fallback_model)
        except (ModelsError, UnknownModelError) as exc:
            raise SettingsError(str(exc)) from None
        if self.learn_model and self.learn_model not in self.model_names:
            raise SettingsError(f"LEARN_MODEL={self.learn_model!r} is not one of the models: {self.model_names}")
        if self.fallback_model and not any(get_spec(self.fallback_model).task is m.task for m in models):
            raise SettingsError(f"FALLBACK_MODEL={self.fallback_model!r} fits none of the models' tasks")

    # -- the models ----------------------------------------------------------------------------

    @cached_property
    def models(self) -> tuple[NamedModel, ...]:
        """Every model on the stream, the default first (parsed once: requests read it)."""
        return parse_models(self.models_declared, self.model_name)

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def model(self) -> NamedModel:
        """The model these settings are for: the one given to for_model, else the default."""
        return self.named_model if self.named_model is not None else self.models[0]

    def for_model(self, model: NamedModel) -> Settings:
        """These settings as one model's learner and replicas read them: its factory as MODEL,
        FALLBACK_MODEL only when it fits the model's task, and its own topics, keys and folders."""
        fallback = self.fallback_model
        if fallback and get_spec(fallback).task is not model.task:
            fallback = ""
        return replace(self, model_name=model.factory, fallback_model=fallback, named_model=model)

    def learned_models(self) -> tuple[NamedModel, ...]:
        """The models `engine learn` learns: LEARN_MODEL's, or the only one."""
        if self.learn_model:
            return tuple(m for m in self.models if m.name == self.learn_model)
        if len(self.models) > 1:
            raise SettingsError(
                f"several models are declared: name the one to learn with LEARN_MODEL, one of {self.model_names}"
            )
        return self.models

    @property
    def model_key_prefix(self) -> bytes:
        """What this model's records on the models topic and commands are keyed under."""
        return f"{self.model.name}/".encode() if self.model.scoped else b""

    def _scoped(self, base: str) -> str:
        return f"{base}-{self.model.scope}" if self.model.scoped else base

    @property
    def predictions_topic(self) -> str:
        return f"{self.app_id}-predictions"

    @property
    def examples_topic(self) -> str:
        """The examples this model learns from, in the one order its learner takes them."""
        return self._scoped(f"{self.app_id}-examples")

    @property
    def models_topic(self) -> str:
        return f"{self.app_id}-models"

    @property
    def workers_topic(self) -> str:
        return f"{self.app_id}-workers"

    @property
    def control_topic(self) -> str:
        return f"{self.app_id}-control"

    @property
    def control_group(self) -> str:
        """The consumer group keeping this model's learner's position on the control topic."""
        return f"{self.app_id}-control-{self.model.name}" if self.model.scoped else f"{self.app_id}-control"

    @property
    def table_path(self) -> Path:
        """This worker's RocksDB tables (one directory per worker: RocksDB locks its files).
        Absolute: Faust reads a relative table directory as relative to its data directory."""
        return (self.state_path / "tables" / f"worker-{self.worker_id}").absolute()

    @property
    def entity_table(self) -> str:
        return "entity-features"

    @property
    def entity_changelog_topic(self) -> str:
        return f"{self.app_id}-{self.entity_table}-changelog"

    @property
    def pid_path(self) -> Path:
        """Where `engine run` records its processes' pids, for `make down`."""
        return self.state_path.parent / "pids"

    @property
    def dlq_events_topic(self) -> str:
        return f"{self.events_topic}.dlq"

    @property
    def dlq_labels_topic(self) -> str:
        return f"{self.labels_topic}.dlq"

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def training_log_path(self) -> Path:
        return self.state_path / self._scoped("training-log")

    @property
    def registry_path(self) -> Path:
        return self.snapshot_path / "registry"

    @property
    def snapshot_path(self) -> Path:
        """This model's snapshots (and its registry, inside)."""
        base = Path(self.snapshot_dir) if self.snapshot_dir else self.state_path / "snapshots"
        return base / "models" / self.model.scope if self.model.scoped else base

    @classmethod
    def documentation(cls) -> list[tuple[str, Any, str]]:
        return [(f.metadata["env"], f.default, f.metadata["help"]) for f in fields(cls) if "env" in f.metadata]
