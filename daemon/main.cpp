// nixproc-init: the entry point reads like the job. Block signals before anything else (they are
// read from a signalfd), read the configuration, check the process manager can start, hand over.
#include "cli/CommandLine.hpp"
#include "config/Config.hpp"
#include "init/Init.hpp"
#include "log/Log.hpp"
#include "manager/ProcessManager.hpp"
#include "process/ExitStatus.hpp"
#include "process/Signals.hpp"

#include <cstdio>
#include <exception>
#include <spdlog/spdlog.h>
#include <unistd.h>

#ifndef NIXPROC_VERSION
#define NIXPROC_VERSION "unknown"
#endif

using namespace nixproc;

namespace {

int usageError(const std::string& what) {
    std::fprintf(stderr, "nixproc-init: %s\nTry 'nixproc-init --help'.\n", what.c_str());
    return exit_code::kUsage;
}

} // namespace

int main(int argc, char** argv) {
    const InheritedSignals signals = InheritedSignals::blockAll();
    setupLogging("info", LogFormat::Text); // to stderr from the first line on

    CommandLine cli;
    try {
        cli = parseCommandLine({argv + 1, argv + argc});
    } catch (const UsageError& e) {
        return usageError(e.what());
    }
    if (cli.help) {
        std::fputs(usageText(), stdout);
        return 0;
    }
    if (cli.version) {
        std::puts("nixproc-init " NIXPROC_VERSION);
        return 0;
    }

    Config config;
    std::unique_ptr<ProcessManager> manager;
    try {
        config = loadConfig(cli, environmentMap(environ));
        manager = makeProcessManager(config);
        if (cli.check_config) {
            std::fputs(renderConfig(config).c_str(), stdout);
            return 0;
        }
        manager->check();
    } catch (const ConfigError& e) {
        spdlog::error("configuration: {}", e.what());
        return exit_code::kUsage;
    } catch (const ManagerError& e) {
        spdlog::error("{}", e.what());
        return e.exit_code;
    }
    setupLogging(config.log.level, config.log.format);

    try {
        return Init(config, *manager, signals).run();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return exit_code::kInternal;
    }
}
