// nixproc-init: the entry point reads like the job. Block signals before anything else (they are
// read from a signalfd), read the configuration, check the process manager can start, hand over.
// Until the hand-over, a stop signal (TERM, INT, QUIT) ends the init at once: nothing runs yet.
#include "cli/CommandLine.hpp"
#include "config/Config.hpp"
#include "init/Init.hpp"
#include "log/Log.hpp"
#include "manager/ProcessManager.hpp"
#include "manager/UpstreamCommand.hpp"
#include "process/ExitStatus.hpp"
#include "process/Signals.hpp"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#ifndef NIXPROC_VERSION
#define NIXPROC_VERSION "unknown"
#endif

using namespace nixproc;

namespace {

int usageError(const std::string& what) {
    std::fprintf(stderr, "nixproc-init: %s\nTry 'nixproc-init --help'.\n", visibleText(what).c_str());
    return exit_code::kUsage;
}

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGQUIT};

// Async-signal-safe: poll, write and _exit only. The line is written only when stderr takes it
// at once: what the init was stuck on may be that very stderr (a log reader that stopped reading).
extern "C" void exitOnStopSignal(int sig) {
    const char* line = sig == SIGTERM  ? "nixproc-init: SIGTERM during start-up: exiting\n"
                       : sig == SIGINT ? "nixproc-init: SIGINT during start-up: exiting\n"
                                       : "nixproc-init: SIGQUIT during start-up: exiting\n";
    pollfd err{.fd = STDERR_FILENO, .events = POLLOUT, .revents = 0};
    if (::poll(&err, 1, 0) == 1 && (err.revents & POLLOUT)) {
        [[maybe_unused]] auto written = ::write(STDERR_FILENO, line, std::strlen(line));
    }
    ::_exit(exit_code::kSignalBase + sig);
}

// Every signal is blocked from the first line on (for the signalfd), but reading the configuration
// and checking the manager must not make the init deaf to `docker stop` or Ctrl-C: a step that
// hangs (a file that blocks, a slow mount) would otherwise keep it up until SIGKILL, and as PID 1
// a signal left at its default action is not delivered at all. So the stop signals are caught
// (the handler exits: no child exists yet) until handOver(), which blocks them again and restores
// their inherited dispositions before any child is started; from then on a stop signal waits,
// pending, for the event loop's signalfd.
class StartupStopSignals {
public:
    StartupStopSignals() {
        struct sigaction exit_now {};
        exit_now.sa_handler = exitOnStopSignal;
        sigfillset(&exit_now.sa_mask);
        sigemptyset(&set_);
        for (std::size_t i = 0; i < std::size(kStopSignals); ++i) {
            ::sigaction(kStopSignals[i], &exit_now, &inherited_[i]);
            sigaddset(&set_, kStopSignals[i]);
        }
        ::pthread_sigmask(SIG_UNBLOCK, &set_, nullptr); // one already pending is handled here, at once
    }
    StartupStopSignals(const StartupStopSignals&) = delete;
    StartupStopSignals& operator=(const StartupStopSignals&) = delete;
    ~StartupStopSignals() { handOver(); }

    void handOver() {
        if (handed_over_) return;
        handed_over_ = true;
        ::pthread_sigmask(SIG_BLOCK, &set_, nullptr); // first: from here on a stop signal stays pending
        for (std::size_t i = 0; i < std::size(kStopSignals); ++i) ::sigaction(kStopSignals[i], &inherited_[i], nullptr);
    }

private:
    sigset_t set_{};
    struct sigaction inherited_[std::size(kStopSignals)] {};
    bool handed_over_ = false;
};

} // namespace

int main(int argc, char** argv) {
    const InheritedSignals signals = InheritedSignals::blockAll();
    StartupStopSignals startup;
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
        // An upstream image's Cmd as COMMAND would do the init's work a second time (or cannot
        // run under it at all): refused before anything runs, and by the check too.
        if (std::string refusal = upstreamCommandRefusal(config, std::getenv("PATH")); !refusal.empty()) {
            spdlog::error("{}", refusal);
            return exit_code::kUsage;
        }
        if (cli.check_config) {
            std::fputs(renderConfig(config).c_str(), stdout);
            return 0;
        }
        setupLogging(config.log.level, config.log.format); // check() logs too (supervisord's probe, warnings)
        // `docker run -it IMAGE bash`: a shell that does not start the manager would never answer
        // for it. Waiting for it (step_timeout_s) and then deploying into the user's shell could
        // only fail, a minute later and into the terminal: the shell runs under a plain init
        // instead, as the notice says. Another program (sleep, a wrapper) may start the manager
        // in ways the init cannot see: it keeps the manager's duties, and the notice says so.
        std::string notice = replacedCommandNotice(*manager, cli.command.empty() ? "manager.command" : "COMMAND");
        if (!notice.empty()) spdlog::info("{}", notice);
        if (manager->commandRole() == CommandRole::Shell) manager = makePlainInit(config);
        manager->check();
    } catch (const ConfigError& e) {
        spdlog::error("configuration: {}", e.what());
        return exit_code::kUsage;
    } catch (const ManagerError& e) {
        spdlog::error("{}", e.what());
        return e.exit_code;
    } catch (const std::exception& e) { // a bug, but not an abort (status 134) without a word
        spdlog::critical("start-up: {}", e.what());
        return exit_code::kInternal;
    }
    startup.handOver();

    try {
        return Init(config, *manager, signals).run();
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return exit_code::kInternal;
    }
}
