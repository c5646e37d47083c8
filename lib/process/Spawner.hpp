#pragma once
// Starts children the way an init must: the signal mask the init inherited, no stray file
// descriptors, an own process group, optionally the terminal's foreground. The Spawner only
// forks and execs; the caller registers the pid with the Reaper, which owns every exit status.
#include "process/Signals.hpp"

#include <stdexcept>
#include <string>
#include <sys/types.h>
#include <system_error>
#include <vector>

namespace nixproc {

struct SpawnRequest {
    std::vector<std::string> argv;        // argv[0] is looked up in PATH like execvp does
    std::vector<std::string> environment; // "KEY=VALUE"; empty: the init's own environment
    std::string workdir;                  // empty: the init's working directory
    bool own_process_group = true;
    bool take_terminal = false;  // hand it the terminal's foreground, if the init has it
    bool capture_output = false; // stdout and stderr into one pipe, stdin from /dev/null
    // Added to the init's own oom_score_adj in the child (at most 1000), so that under memory
    // pressure the kernel kills it rather than the manager. Only raising: it needs no privilege.
    int oom_score_raise = 0;
};

struct Spawned {
    pid_t pid = -1;
    int output_fd = -1; // read end of the output pipe (capture_output), owned by the caller
};

class SpawnError : public std::runtime_error {
public:
    SpawnError(const std::string& what, std::error_code error, int exit_code)
        : std::runtime_error(what), error_(error), exit_code_(exit_code) {}
    std::error_code error() const { return error_; }
    int exitCode() const { return exit_code_; } // 127 not found, 126 cannot execute
private:
    std::error_code error_;
    int exit_code_;
};

class Spawner {
public:
    explicit Spawner(const InheritedSignals& signals) : signals_(signals) {}

    // Throws SpawnError when the command cannot be started; nothing is left running then.
    Spawned spawn(const SpawnRequest& request) const;

private:
    const InheritedSignals& signals_;
};

} // namespace nixproc
