import pytest
from river import datasets

from models.examples import Example
from models.online import Prediction
from models.retrain import RetrainError, retrain
from models.training_log import TrainingLog


def phishing_examples():
    return [(float(i), x, y) for i, (x, y) in enumerate(datasets.Phishing())]


def test_candidate_and_champion_are_compared_on_the_same_recent_holdout():
    result = retrain(phishing_examples(), "logreg", "hoeffding", passes=2, progress=False)
    report = result.report
    assert report["holdout_window"] == {"from": 1000.0, "to": 1249.0, "examples": 250}
    assert report["training_window"]["examples"] == 1000
    assert set(report["champion_metrics"]) == {"accuracy", "roc_auc", "log_loss"}
    expected = report["candidate_metrics"]["accuracy"] - report["champion_metrics"]["accuracy"]
    assert report["improvement"] == pytest.approx(expected)
    assert report["candidate_is_better"] is (expected > 0)
    assert result.candidate.name == "hoeffding"
    assert result.candidate.samples_learned == 2 * 1000 + 250  # passes, then the holdout


def test_one_pass_of_the_same_pipeline_ties_with_the_champion():
    report = retrain(phishing_examples(), "logreg", passes=1, progress=False).report
    # With one pass the candidate is the champion: identical numbers.
    assert report["candidate_metrics"] == report["champion_metrics"]
    assert report["improvement"] == 0 and report["candidate_is_better"] is False


def test_refuses_too_little_data_and_mismatched_tasks():
    with pytest.raises(RetrainError):
        retrain(phishing_examples()[:30], "logreg", progress=False)
    with pytest.raises(RetrainError):
        retrain(phishing_examples(), "logreg", "linreg", progress=False)


def test_training_log_round_trip_keeps_label_types(tmp_path):
    log = TrainingLog(tmp_path)
    for ts, features, label in [(1.0, {"a": 1.5, "s": "x"}, True), (2.0, {"a": 2}, 3)]:
        example = Example(str(ts), ts, features, label, Prediction(None), 1, ("events", 0, int(ts)))
        log.append(ts, example.encode())
    log.flush()
    assert list(log.examples()) == [(1.0, {"a": 1.5, "s": "x"}, True), (2.0, {"a": 2}, 3)]


def test_training_log_keeps_every_example_in_order_across_files(tmp_path):
    log = TrainingLog(tmp_path, flush_rows=3)  # files of three as it goes, then one taken and written later
    expected = []
    for i in range(8):
        features = {"a": float(i), "s": "é" * i}  # examples of different lengths
        log.append(
            float(i), Example(f"e-{i}", float(i), features, i % 2 == 0, Prediction(None), 1, ("events", 0, i)).encode()
        )
        expected.append((float(i), features, i % 2 == 0))
    log.write(log.take())
    assert log.take() is None
    assert list(log.examples()) == expected
    assert len(list(tmp_path.glob("*.parquet"))) == 3
