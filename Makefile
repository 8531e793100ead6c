# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set up, build, fetch the default model, answer a question about a long document
#   make test   set up, build (warnings are errors), fetch the default model, run every test
#   make sanitize  the unit and model tiers under AddressSanitizer + UBSan (CPU code; CI runs it)
# Both are idempotent; each step skips work already done.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DEMO_FLAGS ?= --chat --temperature 0 --max-tokens 96

.PHONY: all setup build model demo test sanitize clean format

all: build

setup:
	@scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DLSERVE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

model: setup
	@scripts/fetch-model.sh

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

format:
	@clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR)
