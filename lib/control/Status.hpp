#pragma once
// What the init is doing, as one snapshot: the phase of the Init, the stage of the deploy engine,
// the running deployment, the last outcomes and the counters. The control socket's `status` and
// `health` answer from it; nothing in it is computed by asking Nix or the manager.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace nixproc {

// The Init's life, in order; each phase is entered once at most.
enum class InitPhase {
    Starting,   // the main child runs, its readiness and start steps are awaited
    Running,    // the manager is ready (or given up on) and its start steps ran
    StopSteps,  // a stop was asked for: the manager's own stop steps run, within the grace
    SignalMain, // the stop signal went to the main child; waiting for it to exit
    StopRest,   // the main child is gone: the processes left behind were told to stop
    Killing,    // the grace is over: SIGKILL to everything left
    Exiting,    // the exit status is decided
};

// Where the deploy engine is.
enum class DeployStage {
    WaitingForManager, // deployments wait until the manager is ready
    Idle,              // nothing runs, nothing is pending
    Debouncing,        // saves came in and are not quiet yet (a follow-up is pending)
    Bootstrapping,     // the Nix channel is set up before a deployment
    Checking,          // deploy.check runs on the model's copy
    Switching,         // the switch runs
    RollingBack,       // a rollback's switch runs
    Collecting,        // garbage collection runs (gc:)
    Stopped,           // shut down, or deployments are off (the state folder is another init's)
};

// Why a deployment runs.
enum class Trigger { Boot, Watch, Signal, Retry, Control, Rollback, AutoRollback };

// How a deployment ended; Running while it has not.
enum class Outcome { Running, Succeeded, Failed, Refused, TimedOut, Interrupted };

std::string_view name(InitPhase);
std::string_view name(DeployStage);
std::string_view name(Trigger);  // as recorded in the state file: boot, watch, signal, ...
std::string_view name(Outcome);  // as recorded: running, succeeded, failed, refused, timed out, interrupted
// The inverse of name() for what the state file holds; nullopt for a name it does not know.
std::optional<Trigger> triggerNamed(std::string_view);
std::optional<Outcome> outcomeNamed(std::string_view);

struct DeploymentStatus {
    unsigned number = 0;
    Trigger trigger = Trigger::Boot;
    Outcome outcome = Outcome::Running;
    std::string started, ended; // ISO 8601 UTC, as recorded
    std::string plan;           // "+webapp2 ~nginx =webapp", "" when unknown
    std::optional<unsigned> generation; // the profile generation it left, when known
};

struct DeployStatus {
    DeployStage stage = DeployStage::WaitingForManager;
    std::optional<DeploymentStatus> current;        // the running deployment
    std::chrono::milliseconds current_elapsed{0};   // how long it has run
    std::optional<DeploymentStatus> last;           // the last one that ended
    std::optional<DeploymentStatus> last_success;
    bool pending = false;        // a follow-up waits (for the running one, or the debounce)
    bool needed = false;         // the model differs from what was last deployed (or nothing was)
    bool rolled_back = false;    // the model is as when a rollback undid its deployment: not deployed until it changes
    bool watching = false;       // the watcher runs
    std::string watcher_problem; // why it does not, when it should
    std::map<Outcome, unsigned> by_outcome; // since the init started
};

struct Status {
    InitPhase phase = InitPhase::Starting;
    std::string manager;       // supervisord, s6-rc, ..., none
    pid_t main_pid = -1;       // -1: no main child
    std::optional<std::chrono::milliseconds> manager_ready_for; // since the manager answered
    bool manager_given_up = false; // not ready within its step timeout: the init went on without it
    std::chrono::milliseconds uptime{0};
    unsigned long long orphans_reaped = 0;
    std::optional<DeployStatus> deploy; // none for a plain init
};

// Health as probes ask it. Live: the loop answered (whoever computes this). Ready: the manager is
// ready and started, and either nothing needs deploying or the last deployment succeeded; `why`
// says in one line what is missing (or what is fine).
struct Health {
    bool ok = false;
    std::string why;
};
Health readiness(const Status&);

} // namespace nixproc
