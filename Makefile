# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
APT_PACKAGES = flite festival festvox-kallpc16k festvox-us-slt-hts espeak-ng libsndfile1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CORPUS ?= corpus
MINUTES ?= 20
RESULTS ?= results/baselines

.PHONY: setup system-packages python-packages demo test

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
	$(PYTHON) -m pip install -q -e ".[test]"

# Main job: build the embedded corpus, run the baselines, print the table.
demo: setup
	gense-baselines --corpus $(CORPUS) --minutes $(MINUTES) --out $(RESULTS)

test: setup
	$(PYTHON) -m pytest
