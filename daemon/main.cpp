// nixproc-init: the entry point reads like the job. Block signals before anything else (they are
// read from a signalfd), parse the command line, then hand over to Init.
#include "cli/CommandLine.hpp"
#include "init/Init.hpp"
#include "log/Log.hpp"
#include "process/ExitStatus.hpp"
#include "process/Signals.hpp"

#include <cstdio>
#include <exception>
#include <spdlog/spdlog.h>

#ifndef NIXPROC_VERSION
#define NIXPROC_VERSION "unknown"
#endif

using namespace nixproc;

int main(int argc, char** argv) {
    const InheritedSignals signals = InheritedSignals::blockAllButFaults();
    setupLogging(0); // to stderr from the first line on; the verbosity is known after parsing

    CommandLine cli;
    try {
        cli = parseCommandLine({argv + 1, argv + argc});
        if (!cli.help && !cli.version && cli.command.empty()) throw UsageError("no command given");
    } catch (const UsageError& e) {
        std::fprintf(stderr, "nixproc-init: %s\nTry 'nixproc-init --help'.\n", e.what());
        return exit_code::kUsage;
    }
    if (cli.help) {
        std::fputs(usageText(), stdout);
        return 0;
    }
    if (cli.version) {
        std::puts("nixproc-init " NIXPROC_VERSION);
        return 0;
    }
    setupLogging(cli.verbosity);

    InitSettings settings{.command = cli.command,
                          .workdir = cli.workdir.value_or(""),
                          .signal_process_group = cli.process_group,
                          .force_subreaper = cli.subreaper};
    if (cli.grace) settings.grace = *cli.grace;
    try {
        return Init(std::move(settings), signals).run();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return exit_code::kInternal;
    }
}
