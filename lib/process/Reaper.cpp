#include "process/Reaper.hpp"

#include "process/ExitStatus.hpp"

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>
#include <sys/wait.h>

namespace nixproc {

void Reaper::watch(pid_t pid, ExitHandler on_exit) { owners_[pid] = std::move(on_exit); }

Reaper::Children Reaper::drain() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid == 0) return Children::Remain;
        if (pid < 0) {
            if (errno == EINTR) continue;
            if (errno != ECHILD) spdlog::error("waitpid: {}", std::strerror(errno));
            return Children::None;
        }
        auto owner = owners_.extract(pid);
        if (owner.empty()) {
            ++orphans_;
            spdlog::debug("reaped orphan {}: {}", pid, describeStatus(status));
            continue;
        }
        owner.mapped()(pid, status);
    }
}

} // namespace nixproc
