# ollama-ecs: `make demo` runs the whole workflow locally; `make test` runs every test. Both install what they
# need (the pinned Ollama build, the local Step Functions engine) into ~/.cache/ollama-ecs/, once.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
FUNCTIONS := $(patsubst functions/%/main.go,%,$(wildcard functions/*/main.go))

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: tools ## run the main job locally: upload, deploy, fall back, generate, auto-stop, tear down
	$(GO) run ./cmd/ollama-ecs local demo

.PHONY: build
build: lambdas ## build the CLI and every Lambda
	$(GO) build -o dist/ollama-ecs ./cmd/ollama-ecs

.PHONY: lambdas
lambdas: ## build each Lambda as dist/<fn>/bootstrap (linux/arm64, provided.al2023; flags in scripts/build-lambda.sh)
	@for fn in $(FUNCTIONS); do scripts/build-lambda.sh $$fn dist/$$fn/bootstrap || exit 1; done

.PHONY: test
test: lint tools ## run every test: the root module (race detector on), then the infra module
	$(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory test-infra

.PHONY: test-infra
test-infra: ## CDK assertion and cdk-nag tests (infra/ is its own module; the first run compiles awscdk, 4-6 min)
	scripts/cdk.sh exec $(GO) -C infra vet ./...
	scripts/cdk.sh exec $(GO) -C infra test -count=1 ./...

.PHONY: synth
synth: lambdas ## synthesise the CDK app into cdk.out/ offline (pinned cdk CLI in ~/.cache/ollama-ecs/cdk/)
	scripts/cdk.sh synth -q

.PHONY: tools
tools: engine ollama chromium ## install the local engine, the pinned Ollama build (cached in ~/.cache/ollama-ecs/) and chromium

.PHONY: engine
engine: ## install the local Step Functions engine (npm ci into ~/.cache/ollama-ecs/engine/<lock hash>/)
	@bash scripts/engine.sh >/dev/null

.PHONY: ollama
ollama: ## build the pinned Ollama once (~/.cache/ollama-ecs/ollama/v<version>/ollama), unless OLLAMA_BIN or PATH has one
	@bash scripts/ollama.sh >/dev/null

.PHONY: chromium
chromium: ## install Debian's chromium for the console's browser test (apt-get, once), unless CHROMIUM_BIN or PATH has one
	@bash scripts/chromium.sh >/dev/null

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: bench
bench: tools ## run the benchmarks (figures and their targets in BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

# The speed calibration runs Ollama built with AVX2 (as the release's CPU variants are); the default local build has
# no SIMD flags. Run it alone: anything else on the machine lowers the measured rates.
SPEED_CPU_FLAGS ?= -mavx2 -mfma -mf16c
.PHONY: bench-speed
bench-speed: ## calibrate the planner's speed estimate against real Ollama (builds an AVX2 Ollama once)
	OLLAMA_ECS_SPEED_OLLAMA=$$(OLLAMA_CPU_FLAGS="$(SPEED_CPU_FLAGS)" bash scripts/ollama.sh | tail -1) \
		$(GO) test -run '^$$' -bench 'MemoryBandwidth|SpeedEstimate' -benchtime 1x -timeout 60m ./test/

# The prices come from AWS (credentials needed: pricing:GetProducts, ec2:DescribeSpotPriceHistory,
# savingsplans:DescribeSavingsPlansOfferingRates); no test runs it.
REGION ?= us-east-1
.PHONY: prices
prices: ## refresh catalog/data/compute.json from the AWS Price List API and Spot price history (REGION=us-east-1)
	$(GO) run ./cmd/ollama-ecs prices --region $(REGION) --out catalog/data/compute.json

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s); the seed corpora also run in make test
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzGGUFHeader$$' -fuzztime $(FUZZTIME) ./functions/steps/
	$(GO) test -run '^$$' -fuzz '^FuzzPlan$$' -fuzztime $(FUZZTIME) ./planner/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./local/cloud/query/

.PHONY: clean
clean: ## remove build outputs (keeps the cache of slow builds in ~/.cache/ollama-ecs/)
	rm -rf dist cdk.out
