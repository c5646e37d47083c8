#pragma once
// The one place that calls waitpid. Every exit status goes to the owner that registered the pid;
// everything else (orphans re-parented to us) is reaped and dropped.
#include <cstddef>
#include <functional>
#include <sys/types.h>
#include <unordered_map>

namespace nixproc {

class Reaper {
public:
    using ExitHandler = std::function<void(pid_t pid, int status)>;

    enum class Children { Remain, None };

    // Registers the owner of `pid`. Call it in the same handler that spawned the child: the
    // Reaper only runs from the event loop, so the child cannot be reaped before this.
    void watch(pid_t pid, ExitHandler on_exit);
    bool watching(pid_t pid) const { return owners_.contains(pid); }

    // Reaps until waitpid has nothing more (SIGCHLDs coalesce, so one wake may stand for many
    // exits). Handlers run as their child is reaped. Says whether any child is left at all.
    Children drain();

    std::size_t orphansReaped() const { return orphans_; }

private:
    std::unordered_map<pid_t, ExitHandler> owners_;
    std::size_t orphans_ = 0;
};

} // namespace nixproc
