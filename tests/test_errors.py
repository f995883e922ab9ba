"""One error base: every error the engine raises on purpose is an EngineError."""

import pytest

from engine.learning import SnapshotRefused
from engine.settings import SettingsError
from models.errors import EngineError, ModelError
from models.factory import UnknownModelError
from models.registry import RegistryError
from models.retrain import RetrainError
from models.snapshots import SnapshotError
from streams.dead_letters import EngineError as ReExported
from streams.dead_letters import InvalidMessage
from streams.features import FeatureDefinitionError

ALL = [
    SettingsError,
    RegistryError,
    RetrainError,
    UnknownModelError,
    FeatureDefinitionError,
    SnapshotError,
    SnapshotRefused,
    ModelError,
    InvalidMessage,
]
# Callers caught these as ValueError before they had a common base; they still can.
STILL_VALUE_ERRORS = [
    SettingsError,
    RegistryError,
    RetrainError,
    UnknownModelError,
    FeatureDefinitionError,
    SnapshotError,
]


@pytest.mark.parametrize("error", ALL, ids=lambda error: error.__name__)
def test_each_engine_error_derives_from_the_one_base(error):
    assert issubclass(error, EngineError)


@pytest.mark.parametrize("error", STILL_VALUE_ERRORS, ids=lambda error: error.__name__)
def test_errors_that_were_value_errors_still_are(error):
    assert issubclass(error, ValueError)


def test_the_base_is_one_class_wherever_it_is_imported_from():
    assert ReExported is EngineError
    with pytest.raises(EngineError):
        raise RegistryError("no model version 7")
