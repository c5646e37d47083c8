#include "manager/ProcessManager.hpp"

#include "manager/Backends.hpp"
#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace nixproc {

bool ReadinessProbe::ready() const {
    if (kind == Kind::FifoReader) {
        int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) return false; // ENOENT: not created yet; ENXIO: nobody reads it yet
        ::close(fd);
        return true;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return false;
    std::strcpy(addr.sun_path, path.c_str());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN;
    ::close(fd);
    return ok;
}

bool ProcessManager::forwards(int) const { return true; }

void requireProgram(const std::string& manager, const std::string& program) {
    auto resolved = resolveCommand(program, std::getenv("PATH"));
    if (resolved.error)
        throw ManagerError(manager + ": cannot run " + program + ": " + resolved.error.message(), resolved.exitCode());
}

void ProcessManager::check() const {
    auto argv = command();
    if (!argv.empty()) requireProgram(name(), argv.front());
}

std::string iniValue(const std::string& file, const std::string& section, const std::string& key) {
    std::ifstream in(file);
    std::string line, current;
    auto trim = [](std::string s) {
        auto b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
        return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    while (std::getline(in, line)) {
        line = trim(line);
        if (line.empty() || line[0] == ';' || line[0] == '#') continue;
        if (line.front() == '[') {
            current = trim(line.substr(1, line.find(']') - 1));
            continue;
        }
        auto eq = line.find_first_of("=:");
        if (current != section || eq == std::string::npos || trim(line.substr(0, eq)) != key) continue;
        std::string value = line.substr(eq + 1);
        if (auto comment = value.find(" ;"); comment != std::string::npos) value.resize(comment);
        return trim(value);
    }
    return "";
}

std::unique_ptr<ProcessManager> makeProcessManager(const Config& config) {
    switch (config.process_manager) {
    case ManagerKind::Supervisord: return makeSupervisord(config);
    case ManagerKind::S6Rc: return makeS6Rc(config);
    case ManagerKind::SysVinit: return makeSysVinit(config);
    case ManagerKind::Disnix: return makeDisnix(config);
    case ManagerKind::None: return makeCommandOnly(config);
    }
    return makeCommandOnly(config);
}

} // namespace nixproc
