# mypt — build, test and run. Every tool is pinned; see README.md.
GO        ?= go
BIN       ?= bin
BUF       := github.com/bufbuild/buf/cmd/buf@v1.75.0
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEMO_DIR  ?= runs/demo

.PHONY: build test vet demo bench bench-cpu proto proto-check proto-breaking conformance clean cuda-check gpu-bundle

## build: the mypt CLI and every shipped backend plugin, side by side in bin/
build:
	$(GO) build -o $(BIN)/ ./cmd/...

## test: static checks, the CUDA kernels' compile check and the whole test suite (what CI runs)
test: vet cuda-check
	$(GO) test ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## demo: the seed's Phase 3a workflow end to end on the CPU backend and shipped demo data
demo: build
	rm -rf $(DEMO_DIR)
	$(BIN)/mypt demo-data --output $(DEMO_DIR)/chat_demo.jsonl
	$(BIN)/mypt prepare --input $(DEMO_DIR)/chat_demo.jsonl --output $(DEMO_DIR)/data --tokenization gpt2 --val_split 0.1
	$(BIN)/mypt backends
	$(BIN)/mypt train --config configs/chat_demo.json --dataset $(DEMO_DIR)/data --output $(DEMO_DIR)/model --backend cpu
	$(BIN)/mypt generate --model $(DEMO_DIR)/model --chat --user "Reverse the word: garden" --preset deterministic --max_new_tokens 24
	$(BIN)/mypt generate --model $(DEMO_DIR)/model --chat --user "Hello!" --preset deterministic --max_new_tokens 24

## bench: Go benchmarks of the hot paths (each prints ratios against a peer measured in the same run)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./...

## bench-cpu: CPU backend vs PyTorch CPU on the same models (needs python3-torch and libopenblas0-pthread)
bench-cpu: build
	./backends/cpu/bench/run.sh

## proto: regenerate sdk/proto/backendv1 from backend.proto with pinned generators
proto:
	cd sdk/proto && $(GO) run $(BUF) lint && $(GO) run $(BUF) generate

## proto-check: fail if the committed generated code differs from a fresh generation
proto-check: proto
	git diff --exit-code -- sdk/proto

## proto-breaking: fail if backend.proto breaks wire compatibility with main
proto-breaking:
	cd sdk/proto && $(GO) run $(BUF) breaking --against '../../.git#branch=main,subdir=sdk/proto'

## conformance: certify a backend (BACKEND=cpu by default)
conformance: build
	$(BIN)/mypt conformance --backend $(or $(BACKEND),cpu)

clean:
	rm -rf $(BIN)

## cuda-check: compile-check the CUDA kernels: clang-19 to PTX for sm_80 and sm_90 without a CUDA SDK
## (bin/kernels_sm_80.ptx, bin/kernels_sm_90.ptx; fails without clang-19), then NVRTC for the local
## GPU's architecture (else sm_90) where libnvrtc is installed (skipped with a message otherwise)
cuda-check:
	$(GO) run ./backends/cuda/cmd/cudacheck -out $(BIN)

## gpu-bundle: what a GPU machine (no Go there, maybe no C++ compiler) needs, built here: stripped
## bin/mypt and bin/mypt-backend-{cpu,cuda,xla} (cgo on, so the xla plugin has its PJRT path),
## bin/mypt-cuda-kernelcheck and the emulated device it checks the GPU's kernels against,
## prebuilt (bin/mypt-cuda-emu.so: needs a host C++ compiler here), packed into
## bin/gpu-bundle.tar.gz (~39 MB: the device tool carries 64 MiB at most, the binaries are ~92 MB).
## On the GPU machine: scripts/gpu-check.sh (it unpacks the bundle); see docs/CUDA.md.
GPU_BUNDLE := $(BIN)/gpu-bundle.tar.gz
GPU_BINS   := mypt mypt-backend-cpu mypt-backend-cuda mypt-backend-xla
GPU_EMU    := mypt-cuda-emu.so
gpu-bundle:
	@command -v gcc >/dev/null || { echo "gpu-bundle: needs gcc: the xla plugin's PJRT path is cgo"; exit 1; }
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ $(addprefix ./cmd/,$(GPU_BINS))
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/mypt-cuda-kernelcheck ./backends/cuda/cmd/kernelcheck
	@$(GO) version -m $(BIN)/mypt-backend-xla | grep -q 'CGO_ENABLED=1' || { echo "gpu-bundle: xla plugin built without cgo (no PJRT)"; exit 1; }
	@if $(GO) version -m $(BIN)/mypt-backend-xla | grep -q 'nopjrt'; then echo "gpu-bundle: xla plugin built with -tags nopjrt"; exit 1; fi
	$(BIN)/mypt-cuda-kernelcheck --build-emu $(BIN)/$(GPU_EMU)
	tar -czf $(GPU_BUNDLE) -C $(BIN) $(GPU_BINS) mypt-cuda-kernelcheck $(GPU_EMU)
	@ls -l $(GPU_BUNDLE) | awk '{printf "%s: %.1f MB\n", $$NF, $$5/1e6}'
	@echo "newest glibc symbol the xla plugin needs: $$(objdump -T $(BIN)/mypt-backend-xla 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
	@echo "newest glibc and libstdc++ symbols the emulator needs: $$(objdump -T $(BIN)/$(GPU_EMU) 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)," \
		"$$(objdump -T $(BIN)/$(GPU_EMU) 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1)"
