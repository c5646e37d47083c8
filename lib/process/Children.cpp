#include "process/Children.hpp"

#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <string>

namespace nixproc {
namespace {

// Field 4 of /proc/PID/stat; the command name (field 2) may hold spaces and parentheses.
pid_t parentOf(const std::string& pid) {
    std::ifstream stat("/proc/" + pid + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return -1;
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 4 >= line.size()) return -1;
    return static_cast<pid_t>(std::strtol(line.c_str() + close + 4, nullptr, 10));
}

} // namespace

std::vector<pid_t> childrenOf(pid_t parent) {
    std::vector<pid_t> children;
    DIR* proc = ::opendir("/proc");
    if (!proc) return children;
    while (dirent* e = ::readdir(proc)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        if (parentOf(e->d_name) == parent) children.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
    }
    ::closedir(proc);
    return children;
}

} // namespace nixproc
