# divergent — set-up and the two entry points: `make demo` (main job) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile scripts/install-system.sh | sha256sum | cut -c1-12)

.PHONY: demo test test-fast install system bench clean

$(STAMP): pyproject.toml Makefile scripts/install-system.sh
	bash scripts/install-system.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned to the pair that co-installs with timm, open_clip and friends
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[all]'
	# the ImageNet-C corruptions without their opencv-python pin: cv2 comes from opencv-python-headless
	$(BIN)/pip install -q --no-deps imagecorruptions-imaug==1.1.5
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## main job: the default study (Fashion-MNIST zoo) -> out/fashion-mnist/report.html
demo: $(STAMP)
	$(BIN)/divergent study run fashion-mnist --out out/fashion-mnist

## the whole test suite, slow end-to-end tests included (this is what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) out
