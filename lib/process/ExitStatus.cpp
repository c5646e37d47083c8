#include "process/ExitStatus.hpp"

#include "process/Signals.hpp"

#include <sys/wait.h>

namespace nixproc {

int exitCodeOf(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return exit_code::kSignalBase + WTERMSIG(status);
    return exit_code::kInternal;
}

std::string describeStatus(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return "killed by " + signalName(WTERMSIG(status)) + (WCOREDUMP(status) ? " (core dumped)" : "");
    return "changed state (wait status " + std::to_string(status) + ")";
}

} // namespace nixproc
