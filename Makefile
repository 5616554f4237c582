# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed
COMFY_STAMP := .cache/comfyui/.provisioned

.PHONY: demo test lint bench eval comfyui train-light clean

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

test: $(STAMP) comfyui
	.venv/bin/ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	.venv/bin/evafusion bench --size 640x480 --models light,dcevo,average,laplacian --json out/bench.json

eval: $(STAMP)
	for s in msrs34 m3fd10 fmb5 roadscene171; do \
	  .venv/bin/evafusion eval --data ../shared/data/ivif/$$s --models light,average,max,laplacian --out out/eval/$$s || exit 1; \
	done

train-light: $(STAMP)
	$(PY) training/train_light.py --config training/configs/light.json --resume

clean:
	rm -rf out runs .pytest_cache
