#pragma once
// Deployments of the processes model, one at a time: at boot (bootstrap: the Nix channel, then the
// first deployment as soon as the manager is ready), after each edit the ModelWatcher reports, and
// on SIGHUP. Edits during a deployment coalesce into one follow-up of the latest content. Each
// deployment: refuse an untrusted model, deploy.check, the switch (its output in the log behind
// "deploy #N |", bounded by deploy.timeout_s), then the plan per process instance and the result,
// all recorded in the state file. A failure is logged with what is true of the running services:
// untouched when the switch did not run, possibly partly updated when it did.
#include "config/Config.hpp"
#include "control/Command.hpp"
#include "manager/ProcessManager.hpp"
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace nixproc {

class DeployQueue {
public:
    DeployQueue(boost::asio::io_context& io, const Spawner& spawner, Reaper& reaper, const Config& config,
                const ProcessManager& manager);
    ~DeployQueue();

    // The manager answers: the boot deployment (deploy.on_boot) may run, and whatever the watcher
    // saw meanwhile.
    void managerReady();
    // SIGHUP, `nixproc-initctl deploy`: deploy now, even an unchanged model; after the running
    // deployment if there is one. `observer` (may be empty) is told when it starts and ends.
    Reply deployNow(Trigger trigger, DeployObserver observer = {});
    // Back to the generation of the profile before the current one, or to `generation`: a
    // deployment of its own (number, record, plan). Refused at once when there is no such
    // generation.
    Reply rollback(std::optional<unsigned> generation, DeployObserver observer = {});
    DeployStatus status() const;
    // The last `count` deployments recorded, oldest first.
    std::vector<DeploymentStatus> history(unsigned count) const;
    // Stop watching, stop a running deployment (it is recorded as interrupted), start no more.
    void shutdown();
    // The init exits now, or kills everything: a deployment still running is recorded, then
    // logged, as interrupted because `why`, at once rather than when its job's end is read.
    void abandon(const std::string& why);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace nixproc
