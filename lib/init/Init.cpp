#include "init/Init.hpp"

#include "init/SignalRouter.hpp"
#include "process/Children.hpp"
#include "process/ExitStatus.hpp"
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cerrno>
#include <cstring>
#include <fmt/ranges.h>
#include <optional>
#include <set>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace nixproc {
namespace {

// After SIGKILL, how long to wait for the kernel to take everything down (a process in
// uninterruptible sleep may never go) before the init exits regardless.
constexpr std::chrono::seconds kKillWait{2};

double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

} // namespace

struct Init::Loop {
    InitSettings settings;
    const InheritedSignals& signals;
    boost::asio::io_context io{1};
    Reaper reaper;
    Spawner spawner{signals};
    std::optional<SignalRouter> router;
    boost::asio::steady_timer deadline{io};
    const bool pid1 = ::getpid() == 1;

    pid_t main_pid = -1;
    std::optional<int> main_status;
    bool stopping = false;      // the grace runs
    bool stopping_rest = false; // the main child is gone, the leftovers were told to stop
    bool killing = false;       // the grace is over
    std::set<std::pair<int, pid_t>> signalled; // (signal, pid) already sent; pid -1: everyone
    int exit_code = exit_code::kInternal;

    Loop(InitSettings s, const InheritedSignals& sig) : settings(std::move(s)), signals(sig) {}

    int run() {
        if (!becomeSubreaper()) return exit_code::kInternal;
        router.emplace(io, signals.blocked(), [this](const ReceivedSignal& s) { onSignal(s); });
        if (!startMainChild()) return exit_code;
        io.run();
        return exit_code;
    }

    // Orphans are re-parented to PID 1; anywhere else they would escape us unless we subreap.
    bool becomeSubreaper() {
        if (pid1 && !settings.force_subreaper) return true;
        if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
            spdlog::error("cannot become a child subreaper: {}", std::strerror(errno));
            return false;
        }
        spdlog::debug("not PID 1: registered as child subreaper");
        return true;
    }

    bool startMainChild() {
        SpawnRequest request{.argv = settings.command, .workdir = settings.workdir, .take_terminal = true};
        try {
            main_pid = spawner.spawn(request).pid;
        } catch (const SpawnError& e) {
            spdlog::error("cannot start {}", e.what());
            exit_code = e.exitCode();
            return false;
        }
        reaper.watch(main_pid, [this](pid_t, int status) { onMainChildExit(status); });
        spdlog::debug("started {} as pid {}", fmt::join(settings.command, " "), main_pid);
        return true;
    }

    void onSignal(const ReceivedSignal& s) {
        switch (routeSignal(s.signo, RoutingPolicy{})) {
        case SignalAction::Reap: afterReap(reaper.drain()); break;
        case SignalAction::Shutdown:
            spdlog::info("{} received: stopping (grace {} s)", signalName(s.signo), seconds(settings.grace));
            forward(s.signo);
            beginGrace();
            break;
        case SignalAction::Forward: forward(s.signo); break;
        case SignalAction::Redeploy:
        case SignalAction::Ignore: spdlog::debug("{} ignored", signalName(s.signo)); break;
        }
    }

    void forward(int sig) {
        if (main_status) return;
        pid_t target = settings.signal_process_group ? -main_pid : main_pid;
        if (::kill(target, sig) != 0 && errno != ESRCH)
            spdlog::warn("cannot forward {} to {}: {}", signalName(sig), target, std::strerror(errno));
    }

    void onMainChildExit(int status) {
        main_status = status;
        spdlog::info("main child {} {}", main_pid, describeStatus(status));
    }

    void afterReap(Reaper::Children children) {
        if (!main_status) return;
        if (children == Reaper::Children::None) return finish(exitCodeOf(*main_status));
        if (!stopping_rest) {
            stopping_rest = true;
            spdlog::info("stopping the processes the main child left behind");
            beginGrace();
        }
        // A subreaper adopts the grandchildren of what it stops: they get the signal too.
        signalTheRest(killing ? SIGKILL : SIGTERM);
    }

    void beginGrace() {
        if (stopping) return;
        stopping = true;
        deadline.expires_after(settings.grace);
        deadline.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) onGraceOver();
        });
    }

    void onGraceOver() {
        killing = true;
        spdlog::warn("grace of {} s is over: SIGKILL to everything left", seconds(settings.grace));
        if (!main_status) ::kill(-main_pid, SIGKILL);
        signalTheRest(SIGKILL);
        deadline.expires_after(kKillWait);
        deadline.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            spdlog::error("processes survived SIGKILL for {} s; exiting anyway", kKillWait.count());
            finish(main_status ? exitCodeOf(*main_status) : exit_code::kSignalBase + SIGKILL);
        });
    }

    // Everything but the main child: as PID 1 all of the namespace, as a subreaper our children.
    void signalTheRest(int sig) {
        if (pid1) {
            if (signalled.emplace(sig, -1).second) ::kill(-1, sig);
            return;
        }
        for (pid_t child : childrenOf(::getpid()))
            if (signalled.emplace(sig, child).second) ::kill(child, sig);
    }

    void finish(int code) {
        exit_code = code;
        spdlog::info("exiting with status {} ({} orphans reaped)", code, reaper.orphansReaped());
        deadline.cancel();
        io.stop();
    }
};

Init::Init(InitSettings settings, const InheritedSignals& signals)
    : loop_(std::make_unique<Loop>(std::move(settings), signals)) {}

Init::~Init() = default;

int Init::run() { return loop_->run(); }

} // namespace nixproc
