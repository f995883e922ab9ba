"""Prometheus metrics. A leaf module: anything may import it. Latencies are in seconds.

`python -m engine run` runs several processes; it sets PROMETHEUS_MULTIPROC_DIR so that
every process writes its metrics there and any serving process's /metrics shows them all
(counters and histograms summed; each gauge says how it combines across processes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Sub-millisecond work needs buckets far below the client's 5 ms default floor.
FAST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
)

# Feature names come from producers: series per name are capped, or a flood of names would
# grow every scrape without bound.
NULL_SERIES_MAX = 200

EVENTS_PROCESSED = Counter("rtml_events_processed_total", "Valid events processed by the stream")
LABELS_LEARNED = Counter("rtml_labels_learned_total", "Labels a model learned from", ["model", "source"])
LABELS_MISSING_TARGET = Counter(
    "rtml_labels_missing_target_total",
    "Labelled events whose label lacks a model's target (that model does not learn from them)",
    ["model"],
)
DLQ_MESSAGES = Counter("rtml_dlq_messages_total", "Messages sent to a dead-letter topic", ["topic", "reason"])
PENDING_EXPIRED = Counter(
    "rtml_pending_expired_total", "Predictions whose label never came (TTL) or were evicted (bound)", ["why"]
)
PENDING_SIZE = Gauge("rtml_pending_predictions", "Predictions waiting for their label", multiprocess_mode="livesum")
FEATURE_NULLS = Counter(
    "rtml_feature_nulls_total",
    f'Null feature values received, by feature (the first {NULL_SERIES_MAX} names; the rest as feature="other")',
    ["feature"],
)
FEATURES_DROPPED = Counter(
    "rtml_features_dropped_total",
    "Feature values left out of what a model learned: new names past MAX_MODEL_FEATURES",
    ["model"],
)
EVENT_TIME_LAG = Histogram(
    "rtml_event_time_lag_seconds",
    "Processing time minus event time",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400),
)
LABEL_DELAY = Histogram(
    "rtml_label_delay_seconds",
    "Time between a prediction and the arrival of its label",
    buckets=(0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 86400),
)
STREAM_BATCH_SECONDS = Histogram(
    "rtml_stream_batch_seconds", "Time to process one batch of events", buckets=FAST_BUCKETS
)
MODEL_METRIC = Gauge(
    "rtml_model_metric", "Progressive metric of the live model", ["model", "metric"], multiprocess_mode="livemostrecent"
)
SERVED_METRIC = Gauge(
    "rtml_served_metric",
    "Progressive metric of what HTTP clients were answered (POST /predict with an event_id), on the labels that came",
    ["model", "metric"],
    multiprocess_mode="livemostrecent",
)
SERVED_LOGGED = Counter(
    "rtml_served_predictions_logged_total", "Served predictions with an event_id logged to the predictions topic"
)
SERVED_UNLOGGED = Counter(
    "rtml_served_predictions_unlogged_total",
    "Served predictions with an event_id that could not be logged (buffer full, Kafka unreachable)",
    ["reason"],
)
OFFLINE_LOG_MERGE_ERRORS = Counter(
    "rtml_offline_log_merge_errors_total", "Merges of the offline feature log's files that failed (retried)"
)
LABELS_POSTED = Counter("rtml_labels_posted_total", "Labels accepted by POST /labels and acknowledged by Kafka")
MODEL_SAMPLES = Gauge(
    "rtml_model_samples_learned", "Samples the live model learned from", ["model"], multiprocess_mode="livemostrecent"
)
MODEL_DRIFTS = Gauge(
    "rtml_model_concept_drifts",
    "Concept drifts ADWIN detected on the error stream",
    ["model"],
    multiprocess_mode="livemostrecent",
)
MODEL_VERSION_LAG = Histogram(
    "rtml_model_version_lag_samples",
    "Samples the learner had learned that the model which made a prediction had not (0: the learner predicted)",
    ["model"],
    buckets=(0, 1, 10, 100, 1000, 10_000, 100_000),
)
GC_PAUSE_SECONDS = Histogram(
    "rtml_gc_pause_seconds",
    "Garbage collections, each as long as it stopped the process (its event loop included)",
    ["process", "generation"],
    buckets=FAST_BUCKETS,
)
LEARNER_ERRORS = Counter("rtml_learner_errors_total", "Failed snapshots or publications (retried)", ["error"])
MODELS_PUBLISHED = Counter(
    "rtml_model_publications_total", "Model versions published to the serving processes", ["model"]
)

REQUEST_SECONDS = Histogram(
    "rtml_http_request_seconds", "HTTP request latency", ["route", "status"], buckets=FAST_BUCKETS
)
PREDICTION_SECONDS = Histogram("rtml_prediction_seconds", "Model prediction latency", buckets=FAST_BUCKETS)
CACHE_LOOKUPS = Counter("rtml_cache_lookups_total", "Prediction cache lookups", ["tier", "result"])
CACHE_ERRORS = Counter("rtml_cache_errors_total", "Redis errors and timeouts; L2 is skipped for a back-off after each")
FALLBACKS = Counter(
    "rtml_prediction_fallbacks_total", "Predictions answered by the fallback chain", ["model", "reason"]
)
DEADLINE_EXCEEDED = Counter(
    "rtml_prediction_deadline_exceeded_total", "Primary model predictions slower than the request deadline"
)
FEATURE_DRIFT_KS = Gauge(
    "rtml_feature_drift_ks",
    "KS statistic of a feature's recent window against its reference window",
    ["feature"],
    multiprocess_mode="livemax",
)
PREDICTION_DRIFT_KS = Gauge(
    "rtml_prediction_drift_ks",
    "KS statistic of recent prediction scores against the reference window",
    multiprocess_mode="livemax",
)
TABLE_RECOVERY_REMAINING = Gauge(
    "rtml_table_recovery_records_remaining",
    "Changelog records a stream worker still reads back before it processes events again (0 when it is not recovering)",
    multiprocess_mode="livesum",
)
CONSUMER_LAG = Gauge(
    "rtml_consumer_lag_messages",
    "Messages behind the end of the log",
    ["topic", "partition"],
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "rtml_model_info",
    "The serving model of each named model: 1, and 0 for one it replaced (family: its factory)",
    ["model", "family", "version", "task"],
    multiprocess_mode="livemostrecent",
)
SNAPSHOT_BYTES = Gauge(
    "rtml_snapshot_bytes", "Size of the latest model snapshot", ["model"], multiprocess_mode="livemostrecent"
)
SNAPSHOT_SECONDS = Histogram(
    "rtml_snapshot_write_seconds", "Time to write a snapshot (pickle, fsync, rename)", buckets=FAST_BUCKETS
)
ROLLOUT_DECISIONS = Counter("rtml_rollout_decisions_total", "Shadow/canary rollouts decided", ["model", "decision"])
ROLLOUT_SERVED = Counter("rtml_rollout_predictions_total", "Requests answered by a canary challenger", ["model"])
MODEL_HEALTHY = Gauge(
    "rtml_model_healthy",
    "1 unless the last primary prediction raised or was missing, NaN or infinite",
    ["model"],
    multiprocess_mode="livemin",  # any serving process with a broken model makes it 0
)

FEATURE_AGE = Histogram(
    "rtml_feature_age_seconds",
    "Age of the entity features a prediction used (event time of their last update)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 60, 3600),
)
REPLAYED_EVENTS = Counter(
    "rtml_replayed_events_total",
    "Events skipped because their entity row had applied them (restart or rebalance replay)",
)


def children(metric: Any) -> Callable[..., Any]:
    """`metric.labels(...)`, memoized: labels() checks its arguments and takes a lock on every
    call, about 5 µs, a tenth of a /predict. Only for label values from a small fixed set."""
    return cache(metric.labels)


REQUEST_SECONDS_OF = children(REQUEST_SECONDS)
CACHE_LOOKUPS_OF = children(CACHE_LOOKUPS)
FALLBACKS_OF = children(FALLBACKS)
ROLLOUT_SERVED_OF = children(ROLLOUT_SERVED)
