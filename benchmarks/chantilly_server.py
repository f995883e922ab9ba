"""Runs chantilly (River's deployment tool) with a trained logistic regression, for comparison.

    .state/chantilly-venv/bin/python benchmarks/chantilly_server.py PORT STATE_DIR

chantilly 0.3 imports with current River only once `river.metrics.Metric` points at the
base class it moved to.
"""

import os
import sys

import dill
import river.metrics
import river.metrics.base

river.metrics.Metric = river.metrics.base.Metric

from chantilly import create_app  # noqa: E402
from river import datasets, linear_model, preprocessing  # noqa: E402

port, state_dir = int(sys.argv[1]), sys.argv[2]
os.makedirs(state_dir, exist_ok=True)
app = create_app(
    {"SECRET_KEY": "bench", "STORAGE_BACKEND": "shelve", "SHELVE_PATH": os.path.join(state_dir, "chantilly")}
)
model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
for x, y in datasets.Phishing():
    model.learn_one(x, y)
with app.test_client() as client:
    assert client.post("/api/init", json={"flavor": "binary"}).status_code == 201
    assert client.post("/api/model", data=dill.dumps(model)).status_code == 201
app.run(host="127.0.0.1", port=port, threaded=True)
