# One entry point. Every target is idempotent and safe to rerun.
PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup tools up down demo test unit lint bench-throughput bench-latency clean

help:
	@echo "make demo    start Kafka + Redis, run the engine on River's Phishing dataset end to end"
	@echo "make test    start Kafka + Redis, run the linters, unit and integration tests"
	@echo "make up      start the local Kafka broker and Redis;  make down  stop what we started"
	@echo "make bench-throughput / bench-latency   run the benchmarks"

PROTO := engine/oip/grpc_predict_v2
setup: $(VENV)/.installed infra/kafka/lib/.complete $(PROTO)_pb2.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON_BIN) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

# The Open Inference Protocol's gRPC messages, generated from our .proto (not committed).
$(PROTO)_pb2.py: $(PROTO).proto $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. $(PROTO).proto

infra/kafka/lib/.complete: infra/kafka/pom.xml
	rm -rf infra/kafka/lib
	mvn -q -B -f infra/kafka/pom.xml package
	touch $@

up: infra/kafka/lib/.complete
	infra/kafka/kafka.sh start
	infra/redis/redis.sh start

# Stops only what this project started, by pid file: the engine processes named in
# .state/pids/*.pid, then our Kafka broker and Redis. Services we did not start stay up.
down:
	infra/stop-pids.sh
	infra/kafka/kafka.sh stop
	infra/redis/redis.sh stop

demo: setup up
	$(PY) -m engine demo

test: setup up tools lint
	$(PY) -m pytest -q

# ruff (lint and format) and mypy over the whole project: part of `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q -m "not integration"

bench-throughput: setup up
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) -m benchmarks.throughput --learner --rounds 3

bench-latency: setup up
	infra/bench-tools.sh
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) -m benchmarks.latency

clean: down
	rm -rf .state $(VENV) infra/kafka/lib $(PROTO)_pb2.py $(PROTO)_pb2.pyi

tools:
	infra/tools.sh
