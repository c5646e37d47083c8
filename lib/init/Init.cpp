#include "init/Init.hpp"

#include "control/ControlServer.hpp"
#include "deploy/DeployQueue.hpp"
#include "log/Log.hpp"
#include "init/Phase.hpp"
#include "init/SignalRouter.hpp"
#include "process/ChildJob.hpp"
#include "process/Children.hpp"
#include "process/ExitStatus.hpp"
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fmt/ranges.h>
#include <optional>
#include <set>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

namespace nixproc {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// After SIGKILL, how long to wait for the kernel to take everything down (a process in
// uninterruptible sleep may never go) before the init exits regardless.
constexpr std::chrono::seconds kKillWait{2};

// How often to look again, while stopping, whether processes that entered the namespace from
// outside are gone: nothing tells PID 1 when a process that is not its descendant exits.
constexpr milliseconds kEnteredPoll{50};

double seconds(milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

// Every line the init logs, as text, to the control socket's clients that follow a deployment
// (initctl deploy --wait). Detached before the server goes.
class ControlLogTap final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
public:
    explicit ControlLogTap(ControlServer& server) : server_(&server) { set_formatter_(makeLogFormatter(LogFormat::Text)); }
    void detach() { server_ = nullptr; }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        if (!server_) return;
        spdlog::memory_buf_t line;
        formatter_->format(msg, line);
        std::string_view text(line.data(), line.size());
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
        server_->publishLog(text);
    }
    void flush_() override {}

private:
    ControlServer* server_;
};

} // namespace

struct Init::Loop {
    const Config& config;
    const ProcessManager& manager;
    const InheritedSignals& signals;
    boost::asio::io_context io{1};
    Reaper reaper;
    Spawner spawner{signals};
    std::optional<SignalRouter> router;
    std::optional<DeployQueue> deployer; // none for a plain init
    std::optional<ControlServer> control; // none when control.socket is "" or cannot be made
    std::shared_ptr<ControlLogTap> log_tap;
    boost::asio::steady_timer deadline{io}; // the grace, then the wait after SIGKILL
    boost::asio::steady_timer probe{io};    // readiness polling, only while starting
    boost::asio::steady_timer entered{io};  // polling for processes entered from outside, only while stopping
    const bool pid1 = ::getpid() == 1;

    InitPhase phase = InitPhase::Starting; // see Phase.hpp for what moves it
    const Clock::time_point began = Clock::now();
    pid_t main_pid = -1;                 // -1: the manager has no main child (sysvinit, disnix)
    std::optional<int> main_status;      // set once the main child is gone (0 when there was none)
    std::shared_ptr<ChildJob> step;      // the start or stop step running now
    std::optional<int> stop_signal;      // set once a shutdown was asked for
    std::optional<Clock::time_point> ready_since; // the manager answered its readiness probe
    bool manager_given_up = false;       // it did not answer within its step timeout
    Clock::time_point grace_end{};
    std::set<std::pair<int, pid_t>> signalled; // (signal, pid) already sent; pid -1: everyone
    std::set<int> withheld_said;               // signals already said not to be forwarded
    int exit_code = exit_code::kInternal;
    bool exiting_said = false; // finish() ran: the log's last line is written once

    Loop(const Config& c, const ProcessManager& m, const InheritedSignals& s) : config(c), manager(m), signals(s) {}

    ~Loop() {
        if (!log_tap) return;
        log_tap->detach();
        auto& sinks = spdlog::default_logger()->sinks();
        sinks.erase(std::remove(sinks.begin(), sinks.end(), log_tap), sinks.end());
    }

    // Every change of phase goes through here, and is in the debug log.
    InitPhase advance(InitEvent event, bool others_left = false) {
        InitPhase next = nextPhase(phase, event, {.main_child_running = !main_status, .others_left = others_left});
        if (next != phase) spdlog::debug("phase {} -> {} ({})", name(phase), name(next), name(event));
        phase = next;
        return phase;
    }

    int run() {
        if (!becomeSubreaper()) return exit_code::kInternal;
        router.emplace(io, signals.blocked(), [this](const ReceivedSignal& s) { onSignal(s); });
        openControlSocket();
        // Asked before the manager starts: a probe may then tell what was already there (a previous run's pidfile).
        auto ready = manager.readiness();
        if (!startMainChild()) return exit_code;
        leaveStartFolder();
        startDeployer();
        if (ready) ready->pid = main_pid;
        if (ready) awaitReady(*ready, Clock::now(), milliseconds(10));
        else runStartSteps();
        io.run();
        return exit_code;
    }

    // Before the manager starts, so that a probe gets "starting" rather than no answer. A socket
    // that cannot be made is an error, not a reason to stop: the services matter more.
    void openControlSocket() {
        if (config.control.socket.empty()) return;
        control.emplace(io, config.control.socket, [this](Command c) { return dispatch(std::move(c)); });
        std::string why;
        if (!control->listen(why)) {
            spdlog::error("control socket: {}; nixproc-initctl cannot reach this init", why);
            control.reset();
            return;
        }
        spdlog::debug("control socket {}", config.control.socket);
        log_tap = std::make_shared<ControlLogTap>(*control);
        spdlog::default_logger()->sinks().push_back(log_tap);
    }

    // A manager deploys with its switch; `none` only with an explicit deploy.command (the COMMAND
    // is then the user's own manager). A configured `none` without one says once that it neither
    // deploys nor watches, rather than ignore those settings silently.
    void startDeployer() {
        // A shell that replaced the manager's program runs under a plain init (main.cpp said so).
        if (plain() && config.process_manager != ManagerKind::None) return;
        bool deploys = config.process_manager != ManagerKind::None || !config.deploy.command.empty();
        if (deploys) return (void)deployer.emplace(io, spawner, reaper, config, manager);
        if (!config.source.empty())
            spdlog::info("process_manager none and no deploy.command in {}: {} is neither deployed nor watched",
                         config.source, config.processes);
    }

    // Configured so, or a shell that replaced the manager's program (see main.cpp).
    bool plain() const { return manager.name() == "none"; }

    // A plain init's child is no manager called "none".
    std::string mainChildName() const { return plain() ? "main child" : manager.name(); }

    // A plain init (like tini) stays quiet about its one child; a manager's start is news.
    spdlog::level::level_enum lifecycleLevel() const { return plain() ? spdlog::level::debug : spdlog::level::info; }

    // Orphans are re-parented to PID 1; anywhere else they would escape us unless we subreap.
    bool becomeSubreaper() {
        if (pid1 && !config.force_subreaper) return true;
        if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
            spdlog::error("cannot become a child subreaper: {}", std::strerror(errno));
            return false;
        }
        spdlog::debug("not PID 1: registered as child subreaper");
        return true;
    }

    // The init would keep its start folder busy for as long as it runs (a volume that cannot be
    // unmounted): the main child already has its own (that one, or -w's). Paths in the
    // configuration are absolute, and supervisord.conf was read in check(), so nothing depends on it.
    void leaveStartFolder() {
        if (::chdir("/") != 0) spdlog::warn("cannot leave the start folder for /: {}", std::strerror(errno));
    }

    bool startMainChild() {
        auto argv = manager.command();
        if (argv.empty()) return true;
        SpawnRequest request{.argv = argv, .workdir = config.manager.workdir, .take_terminal = true};
        try {
            main_pid = spawner.spawn(request).pid;
        } catch (const SpawnError& e) {
            spdlog::error("cannot start {}", e.what());
            exit_code = e.exitCode();
            return false;
        }
        reaper.watch(main_pid, [this](pid_t, int status) { onMainChildExit(status); });
        spdlog::log(lifecycleLevel(), "started {} (pid {}): {}", mainChildName(), main_pid, fmt::join(argv, " "));
        return true;
    }

    // Polled with a growing interval: there is no event for "a socket is listening", and this
    // only runs while the manager starts.
    void awaitReady(const ReadinessProbe& ready, Clock::time_point since, milliseconds interval) {
        if (phase != InitPhase::Starting || main_status) return;
        if (ready.ready()) {
            ready_since = Clock::now();
            spdlog::info("{} is ready ({} answers after {} ms)", manager.name(), ready.path,
                         std::chrono::duration_cast<milliseconds>(Clock::now() - since).count());
            return runStartSteps();
        }
        if (Clock::now() - since > config.manager.step_timeout) {
            // It may still come up (a slow start): its start steps and deployments go ahead, and
            // say for themselves whether they reach it. It is never said to have started.
            spdlog::error("{} not ready after {} s: nothing answers on {}; going on without it", manager.name(),
                          config.manager.step_timeout.count(), ready.path);
            manager_given_up = true;
            return runStartSteps(false);
        }
        probe.expires_after(interval);
        probe.async_wait([this, ready, since, interval](const boost::system::error_code& ec) {
            if (!ec) awaitReady(ready, since, std::min(interval * 2, milliseconds(500)));
        });
    }

    void sayStarted(bool ready, std::size_t failed, std::size_t total) const {
        if (failed != 0) spdlog::error("{} did not start: {} of {} start steps failed", manager.name(), failed, total);
        else if (ready) spdlog::info("{} started", manager.name());
        else spdlog::debug("{}: start steps done ({}), though it was not ready", manager.name(), total);
    }

    // A failed step is never "started", nor a manager that was not ready: the deployer still
    // runs (a switch may repair it).
    void runStartSteps(bool ready = true) {
        if (ready && !ready_since) ready_since = Clock::now(); // no probe: ready once started
        auto steps = manager.startSteps();
        runSteps(steps, 0, config.manager.step_timeout, InitPhase::Starting, [this, ready, total = steps.size()](std::size_t failed) {
            // A plain init has no start steps: "started main child" said it all.
            if (!plain()) sayStarted(ready, failed, total);
            advance(InitEvent::StartDone);
            if (deployer) deployer->managerReady();
        });
    }

    // One step at a time; a failed step is logged and the next one runs (one broken rc script
    // must not keep the others down), and counted for `then`. Steps belong to a phase (the start
    // steps to Starting, the stop steps to StopSteps): once it is left, the rest is not run.
    void runSteps(std::vector<Step> steps, std::size_t next, milliseconds timeout, InitPhase seq,
                  std::function<void(std::size_t failed)> then, std::size_t failed = 0) {
        if (seq != phase) return;
        if (next >= steps.size()) return then(failed);
        Step s = steps[next];
        // A step's purpose is services (an rc script's start): a successful one keeps its group.
        step = ChildJob::start(io, spawner, reaper,
                               {.argv = s.argv, .log_prefix = s.label + " |", .timeout = timeout, .keep_group_on_success = true},
                               [this, steps = std::move(steps), next, timeout, seq, then, failed, label = s.label](const JobResult& r) {
                                   if (!r.ok()) spdlog::error("{}: {}", label, r.description);
                                   else spdlog::debug("{}: {}", label, r.description);
                                   if (seq != phase) return;
                                   step.reset();
                                   runSteps(std::move(steps), next + 1, timeout, seq, then, failed + (r.ok() ? 0 : 1));
                               });
    }

    // A signal is one of the commands anyone may give (see dispatch).
    void onSignal(const ReceivedSignal& s) {
        RoutingPolicy policy{.hup_redeploys = deployer.has_value()};
        switch (routeSignal(s, policy)) {
        case SignalAction::Reap: dispatch({.kind = Command::Kind::Reap}); break;
        case SignalAction::Shutdown: dispatch({.kind = Command::Kind::Shutdown, .signal = s.signo}); break;
        case SignalAction::Forward: dispatch({.kind = Command::Kind::Forward, .signal = s.signo}); break;
        case SignalAction::Redeploy: dispatch({.kind = Command::Kind::Deploy, .trigger = Trigger::Signal}); break;
        case SignalAction::Ignore: spdlog::debug("{} ignored", signalName(s.signo)); break;
        }
    }

    // Signals, the control socket and probes all come here: one place says what each request
    // does in each phase.
    Reply dispatch(Command c) {
        // The exit is decided: what is still queued (signals read in the same batch) changes nothing.
        if (phase == InitPhase::Exiting) return refused("the init is exiting");
        switch (c.kind) {
        case Command::Kind::Reap:
            followMainChildStop();
            afterReap(reaper.drain());
            return {};
        case Command::Kind::Shutdown: beginShutdown(c.signal); return {};
        case Command::Kind::Forward: forward(c.signal); return {};
        case Command::Kind::Status: return {.status = status()};
        case Command::Kind::Health: {
            Health h = c.live ? Health{true, "the init answers (" + std::string(name(phase)) + ")"} : readiness(status());
            return {.why = h.why, .health = h}; // an unhealthy answer is an answer, not a refusal
        }
        case Command::Kind::History:
            if (!deployer) return refused("a plain init does not deploy");
            return {.history = deployer->history(c.count)};
        case Command::Kind::Deploy:
        case Command::Kind::Rollback:
            if (!deployer) return refused("a plain init does not deploy");
            if (stop_signal) return refused("stopping: no more deployments");
            if (c.kind == Command::Kind::Deploy) return deployer->deployNow(c.trigger, std::move(c.observer));
            return deployer->rollback(c.generation, std::move(c.observer));
        }
        return refused("unknown command");
    }

    static Reply refused(std::string why) { return {.accepted = false, .why = std::move(why)}; }

    Status status() const {
        Status s{.phase = phase, .manager = manager.name(), .main_pid = main_status ? -1 : main_pid,
                 .manager_given_up = manager_given_up,
                 .uptime = std::chrono::duration_cast<milliseconds>(Clock::now() - began),
                 .orphans_reaped = reaper.orphansReaped()};
        if (ready_since) s.manager_ready_for = std::chrono::duration_cast<milliseconds>(Clock::now() - *ready_since);
        if (deployer) s.deploy = deployer->status();
        return s;
    }

    // Job control when the init is a shell's job (not PID 1; dumb-init does the same): the main
    // child holds the terminal, so Ctrl-Z stops the child and not the init, while the shell waits
    // for the init to stop. So when the child stops on a terminal stop signal, the init stops too,
    // with the same signal (the shell then says why: "Stopped", "Stopped (tty input)"). The Reaper
    // never asks for stops (no WUNTRACED), so the child's stop report is still there to read.
    // As PID 1 (docker run -it IMAGE CMD) no shell is above the init to `fg` the child: see
    // continueAfterStop.
    void followMainChildStop() {
        if (main_pid < 0 || main_status) return;
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(main_pid), &info, WSTOPPED | WNOHANG) != 0 || info.si_pid != main_pid) return;
        int sig = info.si_status;
        // SIGSTOP comes from someone who meant the child alone (a debugger, kill -STOP).
        if (sig != SIGTSTP && sig != SIGTTIN && sig != SIGTTOU) return;
        if (pid1) return continueAfterStop(sig);
        spdlog::debug("{} (pid {}) stopped by {}: stopping too", manager.name(), main_pid, signalName(sig));
        stopSelf(sig);
        // Continued (fg or bg): the terminal back to the child if the shell gave it to us, then
        // SIGCONT to its whole group, which the terminal stopped as a whole (whatever -g says).
        if (::isatty(STDIN_FILENO) && ::tcgetpgrp(STDIN_FILENO) == ::getpgrp()) ::tcsetpgrp(STDIN_FILENO, main_pid);
        if (::kill(-main_pid, SIGCONT) != 0 && errno != ESRCH)
            spdlog::warn("cannot continue {}: {}", main_pid, std::strerror(errno));
        spdlog::debug("continued: {} (pid {}) continued too", manager.name(), main_pid);
    }

    // PID 1: a main child stopped by Ctrl-Z (or a program's own SIGTSTP, vim's ^Z) would stay
    // stopped for good, the terminal dead and Ctrl-C pending; the kernel spares orphaned process
    // groups that fate, and the init does the same for its child: continued at once, the terminal
    // still its own. SIGTTIN/SIGTTOU (the terminal used from the background) would only come again:
    // said, and left to kill -CONT.
    void continueAfterStop(int sig) {
        if (sig != SIGTSTP) {
            spdlog::warn("{} (pid {}) stopped by {}: it used the terminal from the background; as PID 1 "
                         "nothing resumes it but kill -CONT {}", mainChildName(), main_pid, signalName(sig), main_pid);
            return;
        }
        if (::kill(-main_pid, SIGCONT) != 0 && errno != ESRCH)
            spdlog::warn("cannot continue {}: {}", main_pid, std::strerror(errno));
        spdlog::log(lifecycleLevel(), "{} (pid {}) stopped by SIGTSTP: continued, as PID 1 has no shell to resume it",
                    mainChildName(), main_pid);
    }

    // Returns once the init is continued. The signal is unblocked just for this; the kernel drops
    // it when nobody could continue us (an orphaned process group, e.g. our own session) or when
    // it is ignored, and then the init simply carries on.
    void stopSelf(int sig) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
        ::raise(sig);
        ::pthread_sigmask(SIG_BLOCK, &one, nullptr);
        // The SIGCONT that woke us is pending (it is blocked): taken here, it is not forwarded a second time.
        sigset_t cont;
        sigemptyset(&cont);
        sigaddset(&cont, SIGCONT);
        timespec now{};
        while (::sigtimedwait(&cont, nullptr, &now) == SIGCONT) {}
    }

    void forward(int sig) {
        if (main_pid < 0 || main_status) return;
        if (std::string why = manager.withheld(sig); !why.empty()) {
            // Once per signal: a sender that repeats it (a log rotator, a monitor) must not fill the log.
            std::string program = manager.program().empty() ? manager.name() : manager.program();
            spdlog::log(withheld_said.insert(sig).second ? spdlog::level::info : spdlog::level::debug,
                        "{} not forwarded to {}: {}", signalName(sig), program, why);
            return;
        }
        pid_t target = config.signal_process_group ? -main_pid : main_pid;
        if (::kill(target, sig) != 0 && errno != ESRCH)
            spdlog::warn("cannot forward {} to {}: {}", signalName(sig), target, std::strerror(errno));
    }

    // A stopped manager (kill -STOP, a debugger) would see the stop signal only at SIGKILL: as
    // systemd does, SIGCONT after it.
    void continueMainChild() {
        pid_t target = config.signal_process_group ? -main_pid : main_pid;
        if (::kill(target, SIGCONT) != 0 && errno != ESRCH)
            spdlog::warn("cannot continue {}: {}", target, std::strerror(errno));
    }

    // The manager's own stop steps first, within the grace; then the signal reaches the main child.
    void beginShutdown(int sig) {
        if (stop_signal) return forward(sig); // a second request: pass it on, the clock keeps running
        stop_signal = sig;
        advance(InitEvent::StopAsked);
        spdlog::log(lifecycleLevel(), "{} received: stopping (grace {} s)", signalName(sig), seconds(config.shutdown.grace));
        beginGrace();
        probe.cancel();
        if (deployer) deployer->shutdown();
        if (step) step->stop(); // a start step still running: cut short
        auto remaining = std::chrono::duration_cast<milliseconds>(grace_end - Clock::now());
        runSteps(manager.stopSteps(), 0, std::min<milliseconds>(config.manager.step_timeout, remaining), InitPhase::StopSteps, [this](std::size_t) {
            if (main_pid < 0 && !main_status) main_status = 0; // no main child: the daemons left are stopped as leftovers
            if (advance(InitEvent::StopStepsDone, true) == InitPhase::SignalMain) {
                forward(*stop_signal);
                return continueMainChild();
            }
            afterReap(reaper.drain());
        });
    }

    void onMainChildExit(int status) {
        main_status = status;
        if (deployer) deployer->shutdown(); // nothing left to deploy to
        // The init sends SIGKILL only once its grace is over: any other is the OOM killer's, or someone's kill -9.
        bool foreign_kill = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && phase != InitPhase::Killing;
        spdlog::log(lifecycleLevel(), "{} (pid {}) {}{}", mainChildName(), main_pid, describeStatus(status),
                    foreign_kill ? ", which nixproc-init did not send (the OOM killer?)" : "");
    }

    // After every reap: once the main child is gone (and the stop steps, if any, are done), the
    // rest is told to stop, and the init exits when nothing is left.
    void afterReap(Reaper::Children children) {
        if (!main_status || phase == InitPhase::StopSteps) return;
        bool entered_only = children == Reaper::Children::None && enteredFromOutside();
        bool left = children != Reaper::Children::None || entered_only;
        if (!left) {
            advance(InitEvent::NothingLeft);
            return finish(exitCodeOf(*main_status));
        }
        if (phase != InitPhase::StopRest && phase != InitPhase::Killing) {
            advance(InitEvent::MainExited, true);
            spdlog::log(lifecycleLevel(), "stopping the processes left behind");
            beginGrace();
        }
        // A subreaper adopts the grandchildren of what it stops: they get the signal too.
        signalTheRest(phase == InitPhase::Killing ? SIGKILL : SIGTERM);
        if (entered_only) pollEntered();
    }

    // As PID 1, processes that `docker exec` (podman exec, nsenter) put into the namespace are
    // not our descendants: no SIGCHLD and no drain tells of them, and the kernel SIGKILLs them the
    // moment we exit, with no SIGTERM and no grace. kill(-1, 0) reaches every process of the
    // namespace but us: once our own children are all reaped, whoever it still finds is such a one.
    bool enteredFromOutside() const { return pid1 && ::kill(-1, 0) == 0; }

    // Looked at again until they are gone, or the grace (then the wait after SIGKILL) ends.
    void pollEntered() {
        entered.expires_after(kEnteredPoll);
        entered.async_wait([this](const boost::system::error_code& ec) {
            if (!ec && phase != InitPhase::Exiting) afterReap(reaper.drain());
        });
    }

    void beginGrace() {
        if (grace_end != Clock::time_point{}) return;
        grace_end = Clock::now() + config.shutdown.grace;
        deadline.expires_at(grace_end);
        deadline.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) onGraceOver();
        });
    }

    void onGraceOver() {
        advance(InitEvent::GraceOver); // no further steps: they belong to the phase left
        spdlog::warn("grace of {} s is over: SIGKILL to everything left", seconds(config.shutdown.grace));
        if (deployer) deployer->abandon("stopped by the shutdown, and still running when its grace was over");
        if (main_pid >= 0 && !main_status) ::kill(-main_pid, SIGKILL);
        if (main_pid < 0 && !main_status) main_status = 0;
        signalTheRest(SIGKILL);
        deadline.expires_after(kKillWait);
        deadline.async_wait([this](const boost::system::error_code& ec) {
            if (ec) return;
            spdlog::error("processes survived SIGKILL for {} s; exiting anyway", kKillWait.count());
            advance(InitEvent::KillWaitOver);
            finish(main_status ? exitCodeOf(*main_status) : exit_code::kSignalBase + SIGKILL);
        });
        afterReap(reaper.drain());
    }

    // Everything but the main child: as PID 1 all of the namespace, as a subreaper our children.
    // SIGTERM goes with SIGCONT, as systemd sends it: a stopped process would otherwise see it
    // only at SIGKILL.
    void signalTheRest(int sig) {
        if (pid1) {
            if (!signalled.emplace(sig, -1).second) return;
            ::kill(-1, sig);
            if (sig == SIGTERM) ::kill(-1, SIGCONT);
            // An interactive shell ignores SIGTERM (a `docker exec -it NAME bash` left open) but
            // ends on SIGHUP, as when its terminal hangs up: after the SIGTERM, as systemd does at
            // shutdown, whatever has a controlling terminal gets SIGHUP too. Daemons have none, so
            // none is asked to reload.
            if (sig == SIGTERM)
                for (pid_t pid : withTerminal())
                    if (pid != ::getpid() && signalled.emplace(SIGHUP, pid).second) ::kill(pid, SIGHUP);
            return;
        }
        for (pid_t child : childrenOf(::getpid())) {
            if (!signalled.emplace(sig, child).second) continue;
            ::kill(child, sig);
            if (sig == SIGTERM) ::kill(child, SIGCONT);
        }
    }

    // Once: a SIGCHLD of a child reaped in the drain that emptied the namespace is still read
    // after it, in the same batch of signals.
    void finish(int code) {
        if (exiting_said) return;
        exiting_said = true;
        phase = InitPhase::Exiting;
        exit_code = code;
        // Before the line that ends the log: the loop stops here, and a deployment whose job's end
        // is still queued would be left "running" in the state file and unsaid in the log.
        if (deployer) deployer->abandon("stopped by the shutdown, and still running when the init exited");
        spdlog::log(lifecycleLevel(), "exiting with status {} ({} orphans reaped)", code, reaper.orphansReaped());
        deadline.cancel();
        probe.cancel();
        entered.cancel();
        io.stop();
    }
};

Init::Init(const Config& config, const ProcessManager& manager, const InheritedSignals& signals)
    : loop_(std::make_unique<Loop>(config, manager, signals)) {}

Init::~Init() = default;

int Init::run() { return loop_->run(); }

} // namespace nixproc
