#pragma once
// What can be asked of the init, from wherever it comes: a signal, the control socket, a probe.
// Every such request goes through one Init::dispatch(Command), so that a SIGHUP and
// `nixproc-initctl deploy` are the same deployment, and a probe sees the same state as `status`.
#include "control/Status.hpp"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace nixproc {

// What happens to one deployment asked for through dispatch, told to whoever asked (`--wait`).
struct DeployEvent {
    enum class Kind {
        Started,    // deployment `number` runs (maybe after one that was running)
        Ended,      // it ended with `outcome`
        NotStarted, // it never will: `why` (the model cannot be read, the init stops...)
    } kind = Kind::Started;
    unsigned number = 0;
    Outcome outcome = Outcome::Running;
    std::string why;
};
// Called on the init's loop. Whoever passes one guards what it captures (a weak_ptr): it may be
// called after the client that asked is gone.
using DeployObserver = std::function<void(const DeployEvent&)>;

struct Command {
    enum class Kind {
        Status,   // the snapshot
        History,  // the last `count` deployments, oldest first
        Health,   // `live` or ready
        Deploy,   // deploy the model now, even unchanged (SIGHUP, `initctl deploy`)
        Rollback, // to the previous generation, or `generation`
        Shutdown, // stop with `signal` (SIGTERM, SIGINT, ...)
        Forward,  // pass `signal` on to the main child (as the manager allows)
        Reap,     // SIGCHLD: reap what exited
    } kind = Kind::Status;
    int signal = 0;
    unsigned count = 10;
    bool live = false;
    std::optional<unsigned> generation;
    Trigger trigger = Trigger::Control; // Deploy: Signal for SIGHUP
    DeployObserver observer;            // Deploy, Rollback: told when it starts and ends
};

struct Reply {
    bool accepted = true; // false: refused, `why` says why
    std::string why;
    std::optional<Status> status;               // Status
    std::vector<DeploymentStatus> history;      // History
    std::optional<Health> health;               // Health
};

} // namespace nixproc
