#pragma once
// The one place that calls waitpid. Every exit status goes to the owner that registered the pid;
// everything else (orphans re-parented to us) is reaped and dropped. Owners of a process group
// also learn here when the last member of their group is gone.
#include <cstddef>
#include <functional>
#include <sys/types.h>
#include <unordered_map>

namespace nixproc {

class Reaper {
public:
    using ExitHandler = std::function<void(pid_t pid, int status)>;
    using GroupHandler = std::function<void()>;

    enum class Children { Remain, None };

    // What happens to the group a watched child leads when the child exits.
    enum class AtExit {
        LeaveGroup, // the group's other members carry on
        KillGroup,  // SIGKILL to the group, sent before the leader is reaped (see nextExited)
        KillGroupUnlessSucceeded, // the same, unless the leader exited 0 (what it left are services)
    };

    // Registers the owner of `pid`. Call it in the same handler that spawned the child: the
    // Reaper only runs from the event loop, so the child cannot be reaped before this.
    void watch(pid_t pid, ExitHandler on_exit, AtExit at_exit = AtExit::LeaveGroup);
    bool watching(pid_t pid) const { return owners_.contains(pid); }
    // A watched child that was asked to stop: its group dies with it even if it exits 0.
    void killGroupAtExit(pid_t pid);

    // `on_empty` runs once no process is left in group `pgid`: at the end of the first drain
    // after which kill(-pgid, 0) finds no one (a zombie still counts until it is reaped). Call it
    // from an exit handler (the drain running it checks the group before it returns) or when a
    // drain is sure to follow; there is no polling. An owner that stops waiting must unwatch.
    void watchGroup(pid_t pgid, GroupHandler on_empty);
    void unwatchGroup(pid_t pgid) { groups_.erase(pgid); }
    bool watchingGroup(pid_t pgid) const { return groups_.contains(pgid); }

    // Reaps until waitpid has nothing more (SIGCHLDs coalesce, so one wake may stand for many
    // exits). Handlers run as their child is reaped, then the handlers of the groups that are
    // empty now. Says whether any child is left at all.
    Children drain();

    std::size_t orphansReaped() const { return orphans_; }

private:
    struct Owner {
        ExitHandler on_exit;
        AtExit at_exit;
    };
    pid_t nextExited();
    Children reapAll();
    bool notifyEmptyGroups(); // whether any handler ran

    std::unordered_map<pid_t, Owner> owners_;
    std::size_t group_killers_ = 0; // owners with AtExit::KillGroup
    std::unordered_map<pid_t, GroupHandler> groups_;
    std::size_t orphans_ = 0;
};

} // namespace nixproc
