"""Versions, promote and rollback: in the registry and through the admin routes."""

import asyncio

import pytest
from river import datasets
from starlette.testclient import TestClient

from engine.admin_commands import apply
from engine.api import create_api
from engine.runtime import Runtime
from engine.settings import Settings
from models.examples import Example
from models.online import OnlineModel
from models.registry import ModelRegistry, RegistryError
from tests.helpers import trained

ROWS = list(datasets.Phishing())


def test_rollback_restores_exactly_the_previous_predictions(tmp_path):
    registry = ModelRegistry(tmp_path)
    live = trained(ROWS[:300])
    registry.ensure_serving(live)
    before = [live.predict(x) for x, _ in ROWS[1000:1050]]
    candidate = registry.register(trained(ROWS[:900], "hoeffding"), "candidate", parent=1)
    promoted = registry.promote(candidate, live)
    assert promoted.name == "hoeffding" and promoted.version == candidate
    promoted.learn(*ROWS[950], promoted.predict(ROWS[950][0]))  # serving changes it
    back = registry.rollback(promoted)
    assert back.version == 1
    assert [back.predict(x) for x, _ in ROWS[1000:1050]] == before
    assert registry.serving == 1
    entries = {v["version"]: v for v in registry.versions()}
    assert entries[candidate]["parent"] == 1 and entries[candidate]["kind"] == "candidate"
    assert entries[candidate]["samples_learned"] == 901  # its state when it stopped serving


def test_errors(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.ensure_serving(OnlineModel("logreg"))
    with pytest.raises(RegistryError):
        registry.promote(42, None)
    with pytest.raises(RegistryError):
        registry.rollback(OnlineModel("logreg"))


@pytest.fixture
def service(tmp_path):
    from engine.learning import LearningService
    from models.learner import Learner
    from streams.features import FeatureRegistry

    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path)})
    service = LearningService(settings, Learner(trained(ROWS[:200])), FeatureRegistry())
    service.registry.ensure_serving(service.learner.model)
    return service


def run(service, command):
    return apply(command, service.learner, service.registry)


def test_promote_and_rollback_commands(service):
    body = ROWS[1100][0]
    before = service.learner.predict(body)
    candidate = service.registry.register(trained(ROWS[:1000]), "candidate", parent=1)
    result = run(service, {"action": "promote", "model": "logreg", "version": candidate})
    assert result["outcome"] == "done" and result["serving"]["version"] == candidate
    assert service.learner.model.version == candidate and service.learner.predict(body) != before
    assert service.registry.serving == candidate
    assert run(service, {"action": "rollback", "model": "logreg"})["outcome"] == "done"
    assert service.learner.model.version == 1 and service.learner.predict(body) == before
    assert run(service, {"action": "promote", "model": "logreg", "version": 99})["refusal"] == "conflict"
    assert run(service, {"action": "rollback", "model": "arf"})["refusal"] == "not_found"


def test_rollout_commands(service):
    candidate = service.registry.register(trained(ROWS[:500], "hoeffding"), "candidate", parent=1)
    started = run(
        service,
        {
            "action": "rollout",
            "model": "logreg",
            "version": candidate,
            "mode": "canary",
            "share": 0.1,
            "min_labels": 10,
            "margin": 0.0,
        },
    )
    assert started["outcome"] == "done" and service.learner.rollout.mode == "canary"
    assert run(service, {"action": "rollout_stop", "model": "logreg"})["outcome"] == "done"
    assert service.learner.rollout is None
    assert run(service, {"action": "rollout_stop", "model": "logreg"})["refusal"] == "conflict"


class RecordedCommands:
    """Stands for the learner behind the control topic: answers, or stays silent."""

    def __init__(self, answer):
        self.answer = answer
        self.sent = []

    async def __call__(self, command, served):
        self.sent.append(command)
        return None if self.answer is None else {"id": command["id"], **self.answer}


@pytest.fixture
def client(tmp_path):
    from engine.serving import FixedModel

    settings = Settings.from_env({"REDIS_URL": "", "ADMIN_TOKEN": "s3cret", "STATE_DIR": str(tmp_path)})
    runtime = Runtime.in_process(settings, FixedModel(trained(ROWS[:200])), {})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        client.runtime = runtime
        yield client


AUTH = {"Authorization": "Bearer s3cret"}


def test_admin_routes_need_the_token(client):
    assert client.post("/models/logreg/rollback").status_code == 401
    assert client.post("/models/logreg/rollback", headers={"Authorization": "Bearer nope"}).status_code == 403


def test_admin_routes_hand_commands_to_the_learner_and_relay_its_answer(client):
    client.runtime.command = RecordedCommands({"outcome": "done", "serving": {"version": 2}})
    promoted = client.post("/models/logreg/promote", json={"version": 2}, headers=AUTH)
    assert promoted.status_code == 200 and promoted.json()["serving"] == {"version": 2}
    assert client.runtime.command.sent[0]["action"] == "promote" and client.runtime.command.sent[0]["version"] == 2
    client.runtime.command = RecordedCommands(
        {"outcome": "refused", "refusal": "conflict", "error": "no model version 99"}
    )
    refused = client.post("/models/logreg/promote", json={"version": 99}, headers=AUTH)
    assert refused.status_code == 409 and refused.json()["error"] == "no model version 99"


def test_a_command_the_learner_has_not_answered_yet_is_accepted_with_its_id(client):
    client.runtime.command = RecordedCommands(None)
    accepted = client.post("/models/logreg/rollback", headers=AUTH)
    assert accepted.status_code == 202
    assert accepted.json()["accepted"] == client.runtime.command.sent[0]["id"]


def test_admin_requests_are_checked_before_they_reach_the_learner(client):
    client.runtime.command = RecordedCommands({"outcome": "done"})
    assert client.post("/models/logreg/promote", json={"version": "1"}, headers=AUTH).status_code == 422
    assert client.post("/models/arf/rollback", headers=AUTH).status_code == 404
    bad_share = {"version": 2, "mode": "canary", "share": 1.5}
    assert client.post("/models/logreg/rollout", json=bad_share, headers=AUTH).status_code == 422
    assert client.runtime.command.sent == []


def test_admin_refusals_are_json_with_the_statuses_users_know(client):
    missing = client.post("/models/logreg/rollback")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"error": "admin route: send Authorization: Bearer <ADMIN_TOKEN>"}
    for malformed in ("Bearer", "Bearer  ", "Basic s3cret", "s3cret"):
        assert client.post("/models/logreg/rollback", headers={"Authorization": malformed}).status_code == 401
    wrong = client.post("/models/logreg/rollout/stop", headers={"Authorization": "Bearer s3cret2"})
    assert wrong.status_code == 403 and wrong.json() == {"error": "wrong admin token"}
    client.runtime.command = RecordedCommands({"outcome": "done"})
    assert client.post("/models/logreg/rollback", headers={"Authorization": "bearer s3cret"}).status_code == 200


def test_admin_routes_are_off_without_a_token(tmp_path):
    from engine.serving import FixedModel

    settings = Settings.from_env({"REDIS_URL": "", "ADMIN_TOKEN": "", "STATE_DIR": str(tmp_path)})
    runtime = Runtime.in_process(settings, FixedModel(trained(ROWS[:50])), {})
    runtime.command = RecordedCommands({"outcome": "done"})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        off = client.post("/models/logreg/rollback", headers={"Authorization": "Bearer anything"})
        assert off.status_code == 403 and off.json() == {"error": "admin routes are off: ADMIN_TOKEN is not set"}
        assert client.post("/models/logreg/rollback").status_code == 401
    assert runtime.command.sent == []


def test_only_admin_routes_look_at_the_authorization_header(client):
    wrong = {"Authorization": "Bearer not-ours"}
    assert client.post("/predict", json={"entity_id": "a", "features": {}}, headers=wrong).status_code == 200
    assert client.get("/models", headers=wrong).status_code == 200


def test_refused_admin_requests_are_counted_under_their_route_template(client):
    client.post("/models/logreg/promote", json={"version": 2})
    text = client.get("/metrics").text
    assert 'route="/models/{name}/promote",status="401"' in text


def test_rollout_defaults_come_from_the_settings(client):
    client.runtime.command = RecordedCommands({"outcome": "done", "rollout": {}})
    assert client.post("/models/logreg/rollout", json={"version": 2}, headers=AUTH).status_code == 200
    (sent,) = client.runtime.command.sent
    settings = client.runtime.settings
    assert (sent["mode"], sent["share"], sent["min_labels"], sent["margin"]) == (
        "shadow",
        0.0,
        settings.rollout_min_labels,
        settings.rollout_margin,
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("promote", {"version": True}, "version"),
        ("promote", {}, "version"),
        ("promote", [2], "body"),
        ("rollout", {"version": 2, "mode": "blue-green"}, "mode"),
        ("rollout", {"version": 2, "share": -0.1}, "share"),
        ("rollout", {"version": 2, "min_labels": 0}, "min_labels"),
        ("rollout", {"version": 2, "margin": "big"}, "margin"),
    ],
)
def test_admin_bodies_get_422_naming_the_field(client, path, body, field):
    client.runtime.command = RecordedCommands({"outcome": "done"})
    response = client.post(f"/models/logreg/{path}", json=body, headers=AUTH)
    assert response.status_code == 422 and response.json()["field"] == field
    assert client.runtime.command.sent == []


def learn_rows(service, start, end):
    for i, (x, y) in enumerate(ROWS[start:end], start):
        example = Example(f"row-{i}", 0.0, x, y, service.learner.predict(x), 1, ("events", 0, i))
        service.learner.learn(example)
        service.training_log.append(0.0, example.encode())
    service.learner.end_batch()


def disk_full(data, meta):
    raise OSError(28, "No space left on device")


async def test_a_snapshot_that_cannot_be_written_is_counted_and_tried_again(service, monkeypatch):
    monkeypatch.setattr(service.snapshots, "write_encoded", disk_full)
    learn_rows(service, 200, 220)
    service.snapshot()  # the files are written on a thread: logged and counted, the stream goes on
    assert service._snapshotting is not None
    await service._snapshotting
    assert service._snapshot_cadence.due(service.learner.model.samples_learned)  # due again at the next check


async def test_a_snapshot_holds_the_model_and_training_log_of_its_moment_while_learning_goes_on(service):
    """On the engine's loop the files are written on a thread: what they hold is the cut taken
    when the snapshot was asked for, not what the learner learned while they were written."""
    learn_rows(service, 200, 300)
    at_cut = service.learner.model.samples_learned
    service.snapshot()
    learn_rows(service, 300, 400)  # before the thread has written anything
    await service._snapshotting
    latest = service.snapshots.latest()
    assert latest is not None
    assert latest.meta["samples_learned"] == at_cut == latest.state["model"].samples_learned
    assert len(list(service.training_log.examples())) == 100  # the rows up to the cut, none after
    assert service.learner.model.samples_learned == at_cut + 100


async def test_a_large_model_s_snapshot_covers_no_example_its_training_log_lacks(service):
    """A model that pickles slowly is snapshotted in a forked child, after its training log
    is written on a thread; what is learned meanwhile is in the log before the cut is taken."""
    learn_rows(service, 200, 300)
    service.learner.pickle_seconds = 1.0  # as a forest's: the child's path
    service.snapshot()
    await asyncio.sleep(0)  # the log's rows so far are taken and being written on a thread
    learn_rows(service, 300, 350)  # batches go on meanwhile
    await service._snapshotting
    latest = service.snapshots.latest()
    assert latest is not None
    assert latest.meta["samples_learned"] == 350 == latest.state["model"].samples_learned
    logged = [features for _, features, _ in service.training_log.examples()]
    assert logged == [x for x, _ in ROWS[200:350]]  # every one up to the cut, once, in order
    assert not service._snapshot_cadence.due(service.learner.model.samples_learned)


async def test_a_rollout_decision_waits_for_the_registry_to_record_it(service, monkeypatch):
    candidate = service.registry.register(trained(ROWS[:1000]), "candidate", parent=1)
    run(
        service,
        {
            "action": "rollout",
            "model": "logreg",
            "version": candidate,
            "mode": "shadow",
            "share": 0.0,
            "min_labels": 1,
            "margin": -1.0,
        },
    )
    rollout = service.learner.rollout
    for x, y in ROWS[1000:1005]:
        service.learner.learn(
            Example(
                str(id(x)),
                0.0,
                x,
                y,
                service.learner.predict(x),
                1,
                ("events", 0, 0),
                challenger=rollout.challenger.predict(x),
            )
        )
    assert rollout.decision() == "promote"

    def unwritable(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(service.registry, "promote", unwritable)
    await service._decide_rollout()
    assert service.learner.rollout is rollout and service.learner.model.version == 1  # nothing half done
    monkeypatch.undo()
    # No broker here: publishing is another test's business.
    monkeypatch.setattr(service, "publish_all", _nothing)
    await service._decide_rollout()
    assert service.learner.rollout is None and service.learner.model.version == candidate


def test_an_admin_command_the_registry_cannot_record_is_refused_as_unavailable(service, monkeypatch):
    candidate = service.registry.register(trained(ROWS[:300]), "candidate", parent=1)

    def unwritable(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(service.registry, "promote", unwritable)
    result = run(service, {"action": "promote", "model": "logreg", "version": candidate})
    assert result["refusal"] == "unavailable" and service.learner.model.version == 1


async def _nothing():
    return None
