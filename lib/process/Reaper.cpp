#include "process/Reaper.hpp"

#include "process/ExitStatus.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <vector>

namespace nixproc {

void Reaper::watch(pid_t pid, ExitHandler on_exit, AtExit at_exit) {
    auto [it, added] = owners_.try_emplace(pid);
    if (!added && it->second.at_exit != AtExit::LeaveGroup) --group_killers_;
    it->second = {std::move(on_exit), at_exit};
    if (at_exit != AtExit::LeaveGroup) ++group_killers_;
}

void Reaper::killGroupAtExit(pid_t pid) {
    auto it = owners_.find(pid);
    if (it != owners_.end() && it->second.at_exit == AtExit::KillGroupUnlessSucceeded) it->second.at_exit = AtExit::KillGroup;
}

void Reaper::watchGroup(pid_t pgid, GroupHandler on_empty) { groups_[pgid] = std::move(on_empty); }

Reaper::Children Reaper::drain() {
    // A group's handler may start children (the next step) or exit ones: look again after it.
    for (;;) {
        Children left = reapAll();
        if (!notifyEmptyGroups()) return left;
    }
}

// While a group must die with its leader, look first and reap second: as long as the exited
// leader is a zombie its pid cannot be reused, so the group it led is still its group, and no
// one else's, when it gets SIGKILL. Returns the exited child (0: none yet), or -1 for "any":
// then waitpid does it all in one call, and reports the errors.
pid_t Reaper::nextExited() {
    if (group_killers_ == 0) return -1;
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -1;
    pid_t pid = info.si_pid;
    auto owner = owners_.find(pid);
    if (owner != owners_.end()) {
        bool succeeded = info.si_code == CLD_EXITED && info.si_status == 0;
        AtExit at_exit = owner->second.at_exit;
        if (at_exit == AtExit::KillGroup || (at_exit == AtExit::KillGroupUnlessSucceeded && !succeeded)) ::kill(-pid, SIGKILL);
    }
    return pid;
}

Reaper::Children Reaper::reapAll() {
    for (;;) {
        pid_t pid = nextExited();
        if (pid == 0) return Children::Remain;
        int status = 0;
        pid = ::waitpid(pid, &status, WNOHANG);
        if (pid == 0) return Children::Remain;
        if (pid < 0) {
            if (errno == EINTR) continue;
            if (errno != ECHILD) spdlog::error("waitpid: {}", std::strerror(errno));
            return Children::None;
        }
        auto owner = owners_.find(pid);
        if (owner == owners_.end()) {
            ++orphans_;
            spdlog::debug("reaped orphan {}: {}", pid, describeStatus(status));
            continue;
        }
        auto handler = std::move(owner->second.on_exit);
        if (owner->second.at_exit != AtExit::LeaveGroup) --group_killers_;
        owners_.erase(owner);
        handler(pid, status);
    }
}

bool Reaper::notifyEmptyGroups() {
    // Collected first: a handler may watch or unwatch groups (a finished job starts the next).
    std::vector<GroupHandler> empty;
    for (auto it = groups_.begin(); it != groups_.end();) {
        if (::kill(-it->first, 0) != 0 && errno == ESRCH) {
            empty.push_back(std::move(it->second));
            it = groups_.erase(it);
        } else {
            ++it;
        }
    }
    for (auto& on_empty : empty) on_empty();
    return !empty.empty();
}

} // namespace nixproc
