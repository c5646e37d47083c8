#include "process/Children.hpp"

#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <optional>
#include <sstream>

namespace nixproc {
namespace {

struct Stat {
    std::string name;
    char state = '?';
    pid_t parent = -1;
    pid_t group = -1;
    int terminal = 0; // tty_nr: 0 without a controlling terminal
};

// Fields 2 to 5 and 7 of /proc/PID/stat; the command name (field 2) may hold spaces and parentheses.
std::optional<Stat> statOf(const char* pid) {
    std::ifstream in(std::string("/proc/") + pid + "/stat");
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    Stat stat{.name = line.substr(open + 1, close - open - 1)};
    std::istringstream rest(line.substr(close + 1));
    pid_t session = -1;
    if (!(rest >> stat.state >> stat.parent >> stat.group >> session >> stat.terminal)) return std::nullopt;
    return stat;
}

template <class Visit>
void eachProcess(Visit&& visit) {
    DIR* proc = ::opendir("/proc");
    if (!proc) return;
    while (dirent* e = ::readdir(proc)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        if (auto stat = statOf(e->d_name)) visit(static_cast<pid_t>(std::atoi(e->d_name)), *stat);
    }
    ::closedir(proc);
}

} // namespace

std::vector<pid_t> childrenOf(pid_t parent) {
    std::vector<pid_t> children;
    eachProcess([&](pid_t pid, const Stat& stat) {
        if (stat.parent == parent) children.push_back(pid);
    });
    return children;
}

std::vector<pid_t> withTerminal() {
    std::vector<pid_t> found;
    eachProcess([&](pid_t pid, const Stat& stat) {
        if (stat.terminal != 0) found.push_back(pid);
    });
    return found;
}

std::vector<GroupMember> membersOfGroup(pid_t pgid) {
    std::vector<GroupMember> members;
    eachProcess([&](pid_t pid, const Stat& stat) {
        if (stat.group == pgid) members.push_back({pid, stat.parent, stat.state, stat.name});
    });
    return members;
}

std::string describe(const GroupMember& member) {
    std::string state = member.state == 'Z'   ? "zombie"
                        : member.state == 'D' ? "uninterruptible"
                                              : std::string(1, member.state);
    return "pid " + std::to_string(member.pid) + " (" + member.name + ", " + state + ", parent " +
           std::to_string(member.parent) + ")";
}

} // namespace nixproc
