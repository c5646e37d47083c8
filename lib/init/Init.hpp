#pragma once
// PID 1 duties wired together: start the process manager (or the plain command), reap everything,
// route signals, and the shutdown sequence: the manager's stop steps, SIGTERM to it, then to
// whatever is left, SIGKILL when the grace is over.
#include "config/Config.hpp"
#include "manager/ProcessManager.hpp"
#include "process/Signals.hpp"

#include <memory>

namespace nixproc {

class Init {
public:
    Init(const Config& config, const ProcessManager& manager, const InheritedSignals& signals);
    ~Init();

    // Runs until the main child and everything else has gone; returns the init's exit code.
    int run();

private:
    struct Loop;
    std::unique_ptr<Loop> loop_;
};

} // namespace nixproc
