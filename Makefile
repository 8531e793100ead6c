# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set up, build, fetch the default model, answer a question about a long document
#   make test   set up, build (warnings are errors), fetch the default model, run every test
#   make sanitize  the unit and model tiers under AddressSanitizer + UBSan (gcc, CPU code)
#   make fuzz      the libFuzzer targets of fuzz/ (clang, ASan + UBSan), FUZZ_SECONDS each
#   make sanitize-unit  the unit tier under ASan + UBSan in the fuzz targets' build (CI runs it)
# All are idempotent; each step skips work already done.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DEMO_FLAGS ?= --chat --temperature 0 --max-tokens 96

.PHONY: all setup build model gemma demo test sanitize fuzz-build fuzz sanitize-unit clean format

all: build

setup:
	@scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DLSERVE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

model: setup
	@scripts/fetch-model.sh

# Gemma 3 270M (~250 MB): not part of `make test`; its model-tier tests skip without it.
gemma: setup
	@scripts/fetch-model.sh gemma3

demo: build model
	@echo "== lserve generate: a question about a ~1,600-token report (prompts/demo.txt) =="
	@$(BUILD_DIR)/lserve generate --model default --prompt-file prompts/demo.txt $(DEMO_FLAGS)

test: build model
	@cd $(BUILD_DIR) && ctest --output-on-failure -j 2 --timeout 1200

SANITIZE_DIR ?= build-asan
sanitize: setup model
	@cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLSERVE_CUDA=OFF \
	  -DLSERVE_SANITIZE=address,undefined >/dev/null
	@cmake --build $(SANITIZE_DIR) -j $(JOBS) --target lserve_tests lserve_model_tests
	@cd $(SANITIZE_DIR) && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest -L "unit|model" --output-on-failure -j 2 --timeout 1200

# One clang build (build-fuzz/) with every library instrumented for libFuzzer and ASan + UBSan:
# the fuzz targets and, for sanitize-unit, the unit tests. -O1 and line tables keep it quick.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
fuzz-build:
	@scripts/setup.sh --fuzz
	@cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
	  -DLSERVE_FUZZ=ON -DLSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets

# Each target on its working copy of fuzz/corpus/<target>; fails on a crash, sanitizer report,
# leak, timeout or out-of-memory (fuzz/run.sh; FUZZ_JOBS targets at a time).
fuzz: fuzz-build
	@FUZZ_BUILD_DIR=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) fuzz/run.sh

sanitize-unit: fuzz-build
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target lserve_tests
	@cd $(FUZZ_DIR) && ctest -L unit --output-on-failure -j 2 --timeout 1200

format:
	@clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(FUZZ_DIR)
