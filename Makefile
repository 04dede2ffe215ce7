# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
APT_PACKAGES = flite festival festvox-kallpc16k festvox-us-slt-hts espeak-ng libsndfile1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CORPUS ?= corpus
MINUTES ?= 20
RESULTS ?= results/baselines
MODEL ?= pretrained/mage
DEMO_OUT ?= results/demo
# Exact versions of every dependency, from a fresh venv (refresh: make lock).
LOCK ?= requirements/lock.txt
LOCK_VENV ?= /tmp/gense-lock-venv

.PHONY: setup system-packages python-packages demo baselines test doctor lock size

setup: system-packages python-packages

# Debian TTS voices for the embedded corpus.
system-packages:
	@if command -v flite >/dev/null && command -v festival >/dev/null \
	   && command -v espeak-ng >/dev/null \
	   && [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] \
	   && [ -d /usr/share/festival/voices/english/kal_diphone ]; then \
	  echo "TTS voices present"; \
	else \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

python-packages:
	$(PYTHON) -m pip install -q -c $(LOCK) -e ".[test]"

# Versions, shipped models, offline assets, TTS voices; fails on a broken torch pair.
doctor:
	$(PYTHON) -m speechbrain_gense.doctor

# Size of the tracked tree and of each shipped model folder (budget: 100 MB in all).
size:
	@git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "tracked tree: %.1f MB\n", $$1 / 1e6}'
	@for d in pretrained/*/; do git ls-files -z "$$d" | xargs -0 du -cb | tail -1 | \
	  awk -v d="$$d" '{printf "  %-28s %6.1f MB\n", d, $$1 / 1e6}'; done

# Refresh the lock file: resolve setup.py's requirements in a new venv, freeze them.
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q ".[test]"
	@mkdir -p $(dir $(LOCK))
	{ echo "# Exact versions for speechbrain-gense, resolved in a fresh venv by 'make lock'"; \
	  echo "# ($$($(LOCK_VENV)/bin/python --version), $$(uname -m)). Installed with: pip install -c $(LOCK) -e ."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude speechbrain-gense; } > $(LOCK)
	rm -rf $(LOCK_VENV)

# Main job: enhance the shipped noisy examples with the shipped MAGE model,
# then score noisy and enhanced against the shipped clean references.
demo: python-packages
	gense-enhance pretrained/examples/noisy -o $(DEMO_OUT) --model $(MODEL) --confidence --overwrite
	gense-eval pretrained/examples/noisy $(DEMO_OUT) --name noisy,enhanced \
	  --manifest pretrained/examples/examples.json \
	  --markdown $(DEMO_OUT)/table.md --out $(DEMO_OUT)/scores.json

# The classical baselines on the embedded corpus (built here, needs the TTS voices).
baselines: setup
	gense-baselines --corpus $(CORPUS) --minutes $(MINUTES) --out $(RESULTS)

test: setup
	$(PYTHON) -m speechbrain_gense.doctor
	$(PYTHON) -m pytest
