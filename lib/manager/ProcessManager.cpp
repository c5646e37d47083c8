#include "manager/ProcessManager.hpp"

#include "deploy/ProfileDiff.hpp"
#include "io/Text.hpp"
#include "manager/Backends.hpp"
#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <arpa/inet.h>
#include <cstdint>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace nixproc {

namespace {

// A non-blocking connect to "IPV4:PORT". On loopback the handshake is done by the time connect
// returns, or at the latest when the zero-timeout poll looks; a handshake still under way counts
// as "not yet" and the next look tries again.
bool tcpAnswers(const std::string& address) {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return false;
    addr.sin_port = htons(static_cast<std::uint16_t>(std::strtoul(address.c_str() + colon + 1, nullptr, 10)));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (!ok && errno == EINPROGRESS) {
        pollfd p{.fd = fd, .events = POLLOUT, .revents = 0};
        int error = 0;
        socklen_t len = sizeof error;
        ok = ::poll(&p, 1, 0) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    }
    ::close(fd);
    return ok;
}

bool pidfileSettled(const std::string& path, std::chrono::milliseconds settle, std::chrono::system_clock::time_point written_after) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    using std::chrono::duration_cast;
    auto written = std::chrono::system_clock::time_point(duration_cast<std::chrono::system_clock::duration>(
        std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    return written >= written_after && std::chrono::system_clock::now() >= written + settle;
}

} // namespace

bool catchesSignals(pid_t pid, const std::vector<int>& signals) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    if (!status) return true;
    for (std::string line; std::getline(status, line);) {
        if (!line.starts_with("SigCgt:")) continue;
        unsigned long long caught = std::strtoull(line.c_str() + 7, nullptr, 16);
        return std::all_of(signals.begin(), signals.end(), [caught](int sig) { return sig > 0 && sig <= 64 && (caught >> (sig - 1)) & 1; });
    }
    return true;
}

bool ReadinessProbe::ready() const {
    bool answers = answersNow();
    return answers && (catches.empty() || pid <= 0 || catchesSignals(pid, catches));
}

bool ReadinessProbe::answersNow() const {
    if (kind == Kind::FifoReader) {
        // Only a FIFO says whether someone reads it: a regular file or /dev/null opens for writing
        // as well, and a device may act on being opened (a watchdog), so nothing else is opened.
        // The descriptor is looked at too, in case the path was replaced in between.
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
        int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) return false; // ENOENT: not created yet; ENXIO: nobody reads it yet
        bool fifo = ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
        ::close(fd);
        return fifo;
    }
    if (kind == Kind::TcpPort) return tcpAnswers(path);
    if (kind == Kind::Pidfile) return pidfileSettled(path, settle, written_after);
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

std::string ProcessManager::withheld(int) const { return ""; }

namespace {

std::string fileName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

bool isShell(const std::string& name) {
    for (const char* shell : {"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "yash", "fish"})
        if (name == shell) return true;
    return false;
}

} // namespace

// Only the file name is compared: the manager's program may be anywhere (a store path, /usr/bin).
// A shell is a debugging shell unless it could start the program: a script file (sh
// /entrypoint.sh) may well, and so may a -c script that names it (sh -c '...; exec supervisord').
CommandRole ProcessManager::commandRole() const {
    const std::string own = program();
    const std::vector<std::string> argv = command();
    if (own.empty() || argv.empty() || fileName(argv.front()) == own) return CommandRole::Manager;
    if (!isShell(fileName(argv.front()))) return CommandRole::Other;
    for (std::size_t i = 1; i < argv.size(); ++i) {
        const std::string& word = argv[i];
        bool option = word.size() > 1 && (word[0] == '-' || word[0] == '+');
        if (!option) return CommandRole::Other; // a script file: what it runs is unknown
        // -c, or options with it (-ec, -lc): the next word is the script, the rest its $0 and arguments.
        if (!word.starts_with("--") && word.find('c', 1) != std::string::npos)
            return i + 1 < argv.size() && argv[i + 1].find(own) != std::string::npos ? CommandRole::Other : CommandRole::Shell;
    }
    return CommandRole::Shell; // interactive: bash, sh -l
}

std::string replacedCommandNotice(const ProcessManager& manager, const std::string& origin) {
    CommandRole role = manager.commandRole();
    if (role == CommandRole::Manager) return "";
    const std::string own = manager.program();
    const std::string what = origin + " " + fileName(manager.command().front()) + " replaces " + own + "'s command";
    auto probe = manager.readiness();
    const std::string wait = probe ? probe->path : own;
    if (role == CommandRole::Shell)
        return what + " and is a shell that does not start " + own + ": nixproc-init runs it as a plain init (no wait for " +
               wait + ", no deployments, every signal passed on); to deploy, leave the " + origin + " out, or start " + own +
               " from it";
    return what + ": nixproc-init still waits for " + wait + " and deploys; for a plain shell use --entrypoint or " +
           "NIXPROC_INIT_PROCESS_MANAGER=none";
}

// The default action of a signal nobody catches or ignores, as it concerns the process: "die"
// (terminate, or terminate with a core), "stop", or "" (ignored, or continue). signal(7).
std::string unhandledSignalFate(int sig) {
    switch (sig) {
    case SIGCHLD: case SIGURG: case SIGWINCH: case SIGCONT: return "";
    case SIGTSTP: case SIGTTIN: case SIGTTOU: case SIGSTOP: return "stop";
    default: return "die";
    }
}

std::string withheldUnlessKept(int sig, std::initializer_list<int> kept) {
    for (int k : kept)
        if (k == sig) return "";
    std::string fate = unhandledSignalFate(sig);
    return fate.empty() ? "" : "it has no handler for it and would " + fate;
}

std::optional<ProfileSnapshot> ProcessManager::inventory(const std::string& profile) const {
    auto l = layout();
    if (!l) return std::nullopt;
    return readProfile(profile, *l);
}

void requireProgram(const std::string& manager, const std::string& program) {
    auto resolved = resolveCommand(program, std::getenv("PATH"));
    if (resolved.error)
        // A plain init (process_manager none) runs a command, not a manager called "none".
        throw ManagerError((manager == "none" ? "" : manager + ": ") + "cannot run " + program + ": " + resolved.error.message(),
                           resolved.exitCode());
}

void ProcessManager::check() const {
    auto argv = command();
    if (!argv.empty()) requireProgram(name(), argv.front());
}

std::string iniValueIn(std::string_view ini_text, const std::string& section, const std::string& key) {
    auto lower = [](std::string_view s) {
        std::string out(s);
        for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return out;
    };
    const std::string wanted = lower(key);
    std::string_view current;
    std::string value;
    forEachLine(ini_text, [&](std::string_view raw) {
        std::string_view line = trimBlanks(raw);
        if (line.empty() || line[0] == ';' || line[0] == '#') return;
        if (line.front() == '[') {
            current = trimBlanks(line.substr(1, line.find(']') - 1));
            return;
        }
        auto eq = line.find_first_of("=:");
        if (current != section || eq == std::string_view::npos || lower(trimBlanks(line.substr(0, eq))) != wanted) return;
        std::string_view v = line.substr(eq + 1);
        for (std::size_t at = 1; at < v.size(); ++at) // an inline comment needs a blank before it
            if ((v[at] == ';' || v[at] == '#') && (v[at - 1] == ' ' || v[at - 1] == '\t')) {
                v = v.substr(0, at);
                break;
            }
        value = trimBlanks(v);
    });
    return value;
}

std::unique_ptr<ProcessManager> makePlainInit(const Config& config) { return makeCommandOnly(config); }

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
