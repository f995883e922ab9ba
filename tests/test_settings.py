import pytest

from engine.settings import Settings, SettingsError


def test_defaults_match_the_readme():
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)


def test_values_are_typed_from_the_environment():
    settings = Settings.from_env({"API_PORT": "9001", "PENDING_TTL_SECONDS": "2.5", "MODEL": "arf"})
    assert settings.api_port == 9001 and settings.pending_ttl_seconds == 2.5 and settings.model_name == "arf"


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match="API_PORT"):
        Settings.from_env({"API_PORT": "eighty"})
    with pytest.raises(SettingsError, match="TOPIC_PARTITIONS"):
        Settings.from_env({"TOPIC_PARTITIONS": "0"})


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).api_port = 1


def test_input_limits_and_the_l1_byte_budget():
    settings = Settings.from_env({})
    assert (settings.max_feature_magnitude, settings.max_id_length) == (1e15, 256)
    assert settings.cache_l1_bytes == 64 * 1024 * 1024
    settings = Settings.from_env({"MAX_FEATURE_MAGNITUDE": "1e9", "MAX_ID_LENGTH": "64", "CACHE_L1_BYTES": "1000"})
    assert (settings.max_feature_magnitude, settings.max_id_length, settings.cache_l1_bytes) == (1e9, 64, 1000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_FEATURE_MAGNITUDE", "0"),
        ("MAX_FEATURE_MAGNITUDE", "-1"),
        ("MAX_FEATURE_MAGNITUDE", "nan"),
        ("MAX_ID_LENGTH", "0"),
        ("CACHE_L1_BYTES", "0"),
    ],
)
def test_limits_must_be_positive(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_engine_run_starts_a_learner_per_model_beside_the_worker_when_learners_are_apart():
    from engine.supervisor import Supervisor

    def stream(env):
        children = Supervisor(Settings.from_env(env))._stream_children()
        return [(c.name, c.args, c.env) for c in children]

    assert stream({}) == [("worker", ["worker", "--embedded-learner"], {})]
    assert stream({"LEARNER": "apart", "MODELS": "clf=logreg@is_fraud,amount=linreg@amount"}) == [
        ("learner-clf", ["learn"], {"LEARN_MODEL": "clf"}),
        ("learner-amount", ["learn"], {"LEARN_MODEL": "amount"}),
        ("worker", ["worker"], {}),
    ]
    with pytest.raises(SettingsError, match="LEARNER must be embedded or apart"):
        Settings.from_env({"LEARNER": "elsewhere"})
