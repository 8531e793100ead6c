// Subcommands of the `lserve` program; each registers its flags and returns the code to run.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace lserve::app {

using Command = std::function<int()>;

Command add_generate_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_profile_heads_command(CLI::App& app);
Command add_serve_command(CLI::App& app);

}  // namespace lserve::app
