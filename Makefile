# One command runs the main job, one runs the tests; each sets up what it needs first.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

run: setup
	$(BIN)/dvc repro
	@echo "memo: memo/MEMO.md; table: metrics/summary.csv (dvc metrics show); deployed INT8 model: "deployed" in metrics/summary.json (models/onnx/, models/qat/, models/tflite/); data report: data/dataset/report.json"

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/train_throughput.py
