#pragma once
// What the init remembers between starts, in one small YAML file in state_dir, replaced
// atomically (temp file, fsync, rename, fsync of the folder): a reader sees the old file or the
// new one, never half of one, and a crash mid-deployment leaves that deployment "running".
#include "control/Status.hpp"

#include <optional>
#include <string>
#include <vector>

namespace nixproc {

struct DeploymentRecord {
    unsigned number = 0;
    Trigger trigger = Trigger::Boot; // in the file by name(): boot, watch, signal, ...
    std::string fingerprint; // of the model it deployed ("" for a rollback: no model)
    std::string started, ended; // ISO 8601, UTC; ended empty while running
    Outcome outcome = Outcome::Running; // in the file by name(): running, succeeded, ...
    std::optional<int> exit_code;
    std::string plan;        // "+webapp2 =webapp =nginx"
    std::optional<unsigned> generation; // the profile's generation when it ended, when known

    DeploymentStatus status() const { return {number, trigger, outcome, started, ended, plan, generation}; }
};

inline constexpr std::size_t kKeptDeployments = 50;

struct DeployState {
    bool channel_configured = false;
    bool bootstrapped = false;          // a deployment has succeeded once
    std::string deployed_fingerprint;   // of the last successful deployment
    // The model as it was when a rollback undid its deployment: not deployed again at boot until
    // it changes (or is asked for).
    std::string rolled_back_fingerprint;
    std::vector<DeploymentRecord> deployments; // the most recent ones (kKeptDeployments), oldest first

    unsigned nextNumber() const { return deployments.empty() ? 1 : deployments.back().number + 1; }
    // Appends a deployment and forgets the oldest beyond kKeptDeployments: memory stays flat.
    void add(DeploymentRecord record);
    // The last deployment did not end: the init died (running) or was stopped (interrupted) in it.
    bool lastUnfinished() const;
};

// What StateStore::open() found.
enum class StateAccess {
    Ready,          // the folder is ours and locked: record and deploy
    HeldByAnother,  // another nixproc-init deploys from it: do not deploy
    Unusable,       // read-only, not a folder, or not safe: deploy without a lock and without records
};

class StateStore {
public:
    explicit StateStore(std::string dir);
    const std::string& file() const { return file_; }

    // Creates the folder (0700, whatever the umask) and takes state_dir/lock for the life of the
    // process (released when it exits, however it exits): two inits deploying from one state
    // folder would undo each other. A folder that others could write (or whose parents they
    // could) is refused: it holds the copy of the model that is deployed as root. `why` says why
    // it is not Ready.
    StateAccess open(std::string& why);

    // A missing file is a first boot. Throws std::runtime_error naming the file for one that
    // cannot be read or parsed.
    DeployState load() const;
    // Throws std::runtime_error naming the file and the failed step.
    void save(const DeployState& state) const;

    static std::string now(); // ISO 8601 UTC with milliseconds

private:
    std::string dir_, file_;
    int lock_fd_ = -1;
};

} // namespace nixproc
