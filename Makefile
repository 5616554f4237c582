# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed
COMFY_STAMP := .cache/comfyui/.provisioned

.PHONY: demo test lint bench gpu-check eval comfyui train-light clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

comfyui: $(STAMP)
	$(PY) scripts/provision_comfyui.py

demo: $(STAMP) comfyui
	.venv/bin/evafusion demo --out out

lint: $(STAMP)
	.venv/bin/ruff check .

# The browser tests run whenever their pieces (Chromium, playwright-core) can be installed; then a
# missing piece is a failure, not a skip.
test: $(STAMP) comfyui
	.venv/bin/ruff check .
	@if bash scripts/browser/install.sh; then export EVAF_BROWSER_REQUIRED=1; \
	else echo "browser pieces not installable here: tests/browser will be skipped"; fi; \
	$(PY) -m pytest -q

bench: $(STAMP)
	.venv/bin/evafusion bench --size 640x480 --models light,dcevo,average,laplacian --json out/bench.json

# On a machine with CUDA: the GPU tests (skipped everywhere else), then GPU speed of fusion and of a GRPO step.
gpu-check: $(STAMP)
	$(PY) -m pytest -q tests/test_cuda.py
	.venv/bin/evafusion bench --device cuda --models light,dcevo,laplacian --json out/bench_cuda.json
	.venv/bin/evafusion grpo --time-step --device cuda --model light
	.venv/bin/evafusion grpo --time-step --device cuda --model dcevo

eval: $(STAMP)
	for s in msrs34 m3fd10 fmb5 roadscene171; do \
	  .venv/bin/evafusion eval --data ../shared/data/ivif/$$s --models light,average,max,laplacian --out out/eval/$$s || exit 1; \
	done

train-light: $(STAMP)
	$(PY) training/train_light.py --config training/configs/light.json --resume

clean:
	rm -rf out runs .pytest_cache

# Real-browser tests (tests/browser/): the example workflows dropped on the real ComfyUI frontend in
# headless Chromium, checked, run and screenshotted. install.sh installs Chromium and playwright-core.
.PHONY: test-browser screenshots
test-browser: $(STAMP) comfyui
	bash scripts/browser/install.sh
	EVAF_BROWSER_REQUIRED=1 $(PY) -m pytest -q tests/browser

# Regenerate docs/screenshots/<workflow>_graph.png and <workflow>_output.png for every workflow.
screenshots: $(STAMP) comfyui
	bash scripts/browser/install.sh
	EVAF_BROWSER_REQUIRED=1 EVAF_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/browser -k test_workflow_in_browser
