# The two commands: `make run` starts the whole system, `make test` runs every test.
SHELL := /bin/bash
# The Go that go.mod asks for: the machine's when it is new enough, else the
# toolchain .ci/toolchain.sh fetches once into var/toolchain.
GO_BIN_DIR := $(shell bash .ci/toolchain.sh)
export PATH := $(if $(GO_BIN_DIR),$(GO_BIN_DIR):)/usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
BIN := bin/afterok
# Tests that hit PostgreSQL and NATS are I/O-bound; two packages at a time on two cores.
TESTFLAGS ?= -count=1 -timeout 20m -p 2
FUZZTIME ?= 10s
# Tests that talk to JetStream, run a second time against an external NATS.
# The outage and cluster tests (TestOutage…, TestCluster…) own the servers
# they stop and never use the external one: keep their names out of it.
NATS_TESTS ?= EndToEnd|Crash|Postgres|Relay|Streams|Queues|Republish|DeliveryLimit

# The login .ci/services.sh made for a freshly installed PostgreSQL, unless
# DATABASE_URL is set; read when a recipe runs, after `services` wrote it.
DBURL_FILE ?= $(or $(AFTEROK_DATABASE_URL_FILE),var/database_url)
DBENV = if [ -z "$$DATABASE_URL" ] && [ -s $(DBURL_FILE) ]; then export DATABASE_URL="$$(cat $(DBURL_FILE))"; fi;

.PHONY: run test build services browser vet unit race fuzz bench clean

run: services build
	$(DBENV) $(BIN) dev

build:
	$(GO) build -o $(BIN) ./cmd/afterok

services:
	@bash .ci/services.sh

# Debian's chromium, for the console's browser tests (make test only).
browser:
	@bash .ci/browser.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: services browser vet
	$(DBENV) $(GO) test -race $(TESTFLAGS) -skip '^TestCluster' ./...
	@# The cluster tests on their own and without -race: their three
	@# JetStream nodes run inside the test process beside six processes,
	@# too much for race instrumentation on two cores. The afterok
	@# processes they start are plain builds.
	$(DBENV) $(GO) test $(TESTFLAGS) -run '^TestCluster' ./cmd/afterok/
	@# The same pipeline against the machine's external NATS (Debian's 2.9),
	@# when one listens: the embedded server above, the external one here.
	@$(DBENV) if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then \
	  echo "== again against the external NATS at nats://127.0.0.1:4222"; \
	  NATS_URL=nats://127.0.0.1:4222 $(GO) test $(TESTFLAGS) -run '$(NATS_TESTS)' ./cmd/... ./eventstore/... ./handlers/...; \
	else echo "== no NATS on 127.0.0.1:4222: external-NATS pass skipped"; fi
	$(MAKE) fuzz

fuzz:
	@bash .ci/fuzz.sh $(FUZZTIME)

bench: services
	$(DBENV) $(GO) test -run '^$$' -bench . -benchtime 3x ./eventstore/

clean:
	rm -rf bin
