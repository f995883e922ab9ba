"""The throughput benchmark's ratios: each engine path against the paths of its own round."""

from benchmarks.throughput import ratios


def result(path: str, rate: float, round_number: int = 1, model: str = "logreg") -> dict:
    return {"path": path, "model": model, "events_per_second": rate, "round": round_number}


def test_one_round_compares_the_worker_and_engine_run_with_every_reference_path() -> None:
    out = ratios(
        [
            result("engine worker --embedded-learner", 20_000),
            result("engine run", 18_000),
            result("quix", 32_000),
            result("aiokafka", 40_000),
        ]
    )
    assert out == {
        "logreg": {
            "engine / engine run": 1.11,
            "engine / quix": 0.62,
            "engine / aiokafka": 0.5,
            "engine run / quix": 0.56,
            "engine run / aiokafka": 0.45,
        }
    }


def test_rounds_pair_paths_within_a_round_and_report_the_median() -> None:
    # Quix Streams is slow in round 2: its ratio there is not mixed with round 1's engine.
    out = ratios(
        [
            result("engine worker --embedded-learner", 20_000, 1),
            result("quix", 40_000, 1),
            result("engine worker --embedded-learner", 24_000, 2),
            result("quix", 24_000, 2),
            result("engine worker --embedded-learner", 18_000, 3),
            result("quix", 30_000, 3),
        ]
    )
    assert out["logreg"] == {"engine / quix": 0.6}
    assert out["logreg, each round"] == {"engine / quix": [0.5, 1.0, 0.6]}


def test_the_learner_apart_is_compared_with_the_reference_paths() -> None:
    out = ratios(
        [
            result("engine worker --embedded-learner", 20_000),
            result("engine, 1 worker + learner", 30_000),
            result("engine run LEARNER=apart", 28_000),
            result("quix", 32_000),
        ]
    )
    assert out["logreg"] == {
        "engine / engine, 1 worker + learner": 0.67,
        "engine / engine run LEARNER=apart": 0.71,
        "engine / quix": 0.62,
        "worker + learner / quix": 0.94,
        "engine run LEARNER=apart / quix": 0.88,
    }


def test_models_are_compared_apart() -> None:
    out = ratios(
        [
            result("engine worker --embedded-learner", 20_000, model="logreg"),
            result("quix", 40_000, model="logreg"),
            result("engine worker --embedded-learner", 10_000, model="hoeffding"),
            result("quix", 12_500, model="hoeffding"),
        ]
    )
    assert out == {"hoeffding": {"engine / quix": 0.8}, "logreg": {"engine / quix": 0.5}}
