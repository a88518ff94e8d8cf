VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test quick lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m search egg --demo --overwrite

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=20

# the tests that start no Ray, search, subprocess or browser (and no test over 5 s): under a minute on 2 cores
quick: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs .pytest_cache
