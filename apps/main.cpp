// lserve: long-context LLM serving with sparse attention.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"

int main(int argc, char** argv) {
  lserve::log::init();
  CLI::App app{"lserve " LSERVE_VERSION
               ": serve Llama-family LLMs on long contexts with sparse attention "
               "(streaming heads + query-aware KV page selection)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags such as --log-level may follow the subcommand
  app.set_version_flag("--version", LSERVE_VERSION);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "Log verbosity: trace, debug, info, warn, error, off")
      ->capture_default_str();
  app.footer("Run `lserve COMMAND --help` for a command's flags.");

  std::map<std::string, lserve::app::Command> commands;
  commands["generate"] = lserve::app::add_generate_command(app);
  commands["bench"] = lserve::app::add_bench_command(app);
  commands["eval"] = lserve::app::add_eval_command(app);
  commands["profile-heads"] = lserve::app::add_profile_heads_command(app);
  commands["serve"] = lserve::app::add_serve_command(app);

  // llama.cpp's "-ngl N" is not a CLI11 name (short names are one letter: it would read as "-n gl"
  // and fail on the number); it becomes --n-gpu-layers.
  std::vector<const char*> args(argv, argv + argc);
  for (const char*& a : args) {
    if (std::string(a) == "-ngl") a = "--n-gpu-layers";
  }
  try {
    app.parse(argc, args.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    lserve::log::set_level(log_level);
    for (const CLI::App* sub : app.get_subcommands()) return commands.at(sub->get_name())();
  } catch (const lserve::Error& e) {
    lserve::log::error("{}", e.what());
    return 1;
  } catch (const std::exception& e) {
    lserve::log::error("unexpected error: {}", e.what());
    return 1;
  }
  return 0;
}
