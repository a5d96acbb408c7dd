# Quick start:  make quickstart   (set up, generate the world, train, evaluate, draw captions)
#               make test         (set up, run the test suite; CI=true: anything missing is an error)
#               make screenshot   (docs/web_demo.png: the web page on the quick start's trained save/world)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On this project's machines torch is pinned to the wheels on disk (CUDA builds of 2.14.1 / 0.29.1).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup java browser fonts quickstart test screenshot clean

# The quick start installs the lean core; the tests add their extras (pytest, Gradio, Selenium).
$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.core java fonts

# METEOR and the PTB tokenizer need Java: install a headless JRE from Debian when it is missing.
java:
	@command -v java >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless); }

# The web page's tests drive headless Chromium: install Debian's chromium and its driver when missing
# (where they cannot be installed, those tests are skipped and say why; with CI=true they fail).
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || echo "could not install chromium and chromium-driver: the browser tests will be skipped"

# Chinese captions on the demo's pictures need a CJK font (Pillow's default has none): install
# Debian's fonts-wqy-zenhei when fontconfig knows no Chinese font (without one, the demo says so).
fonts:
	@{ command -v fc-list >/dev/null 2>&1 && [ -n "$$(fc-list :lang=zh 2>/dev/null)" ]; } \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei) \
	  || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei) \
	  || echo "could not install fonts-wqy-zenhei: Chinese text on the demo's pictures will lack its glyphs"

quickstart: setup
	$(PY) main.py
	$(PY) demo.py --demo_out visu
	@echo "captioned pictures: visu/*.jpg"

# -ra: the reasons of every skip / xfail / failure, then pytest's count line last.
test: $(VENV)/.installed java browser fonts
	$(PY) -m pytest -q -ra tests

# The README's picture of the web page, from the trained quick-start run (make quickstart first).
screenshot: $(VENV)/.installed browser fonts
	$(PY) tools/web_screenshot.py --start_from save/world --out docs/web_demo.png

clean:
	rm -rf $(VENV) data/world save/world visu eval_results
