# The two commands: `make run` starts the whole system, `make test` runs every test.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
BIN := bin/afterok
# Tests that hit PostgreSQL and NATS are I/O-bound; two packages at a time on two cores.
TESTFLAGS ?= -count=1 -timeout 20m -p 2
FUZZTIME ?= 10s

.PHONY: run test build services vet unit race fuzz bench clean

run: services build
	$(BIN) migrate
	$(BIN) verify

build:
	$(GO) build -o $(BIN) ./cmd/afterok

services:
	@bash .ci/services.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: services vet
	$(GO) test -race $(TESTFLAGS) ./...
	$(MAKE) fuzz

fuzz:
	@bash .ci/fuzz.sh $(FUZZTIME)

bench: services
	$(GO) test -run '^$$' -bench . -benchtime 3x ./eventstore/

clean:
	rm -rf bin
