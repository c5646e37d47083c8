#pragma once
// Processes as /proc shows them: the live children of a process (what a subreaper must stop at
// shutdown; a PID 1 simply uses kill(-1, sig)), and the members of a process group (what keeps
// a finished job's group from being empty).
#include <string>
#include <sys/types.h>
#include <vector>

namespace nixproc {

std::vector<pid_t> childrenOf(pid_t parent);

// The processes that have a controlling terminal (an interactive shell, what runs in it).
std::vector<pid_t> withTerminal();

struct GroupMember {
    pid_t pid = -1;
    pid_t parent = -1;
    char state = '?'; // as in /proc/PID/stat: R, S, D (uninterruptible), Z (zombie), T...
    std::string name; // the command name, at most 15 bytes
};

// Zombies included: they stay members until their parent reaps them.
std::vector<GroupMember> membersOfGroup(pid_t pgid);

// "pid 12 (sleep, zombie, parent 7)", for a log line.
std::string describe(const GroupMember& member);

} // namespace nixproc
