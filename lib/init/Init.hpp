#pragma once
// PID 1 duties wired together: start the main child, reap everything, route signals, and the
// shutdown sequence (stop the main child, then whatever is left, SIGKILL after the grace).
#include "process/Signals.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace nixproc {

struct InitSettings {
    std::vector<std::string> command;         // the main child
    std::string workdir;                      // empty: keep the working directory
    std::chrono::milliseconds grace{8000};    // from the first stop request to SIGKILL
    bool signal_process_group = false;        // -g: forward to the child's whole group
    bool force_subreaper = false;             // -s: be a subreaper even as PID 1
};

class Init {
public:
    Init(InitSettings settings, const InheritedSignals& signals);
    ~Init();

    // Runs until the main child and everything else has gone; returns the init's exit code.
    int run();

private:
    struct Loop;
    std::unique_ptr<Loop> loop_;
};

} // namespace nixproc
