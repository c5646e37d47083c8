// The only translation unit that includes Boost.Process: it is heavy to compile.
#include "process/Spawner.hpp"

#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"

#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <termios.h>
#include <unistd.h>

namespace bp = boost::process;

namespace nixproc {
namespace {

// argv/envp for execve, built in the parent so the child does not allocate.
class CStrings {
public:
    explicit CStrings(const std::vector<std::string>& strings) {
        for (const auto& s : strings) pointers_.push_back(const_cast<char*>(s.c_str()));
        pointers_.push_back(nullptr);
    }
    char** data() { return pointers_.data(); }
    bool empty() const { return pointers_.size() == 1; }

private:
    std::vector<char*> pointers_;
};

std::string pathOf(const std::vector<std::string>& environment) {
    if (environment.empty()) {
        const char* p = std::getenv("PATH");
        return p ? p : "";
    }
    for (const auto& kv : environment)
        if (kv.starts_with("PATH=")) return kv.substr(5);
    return "/usr/local/bin:/usr/bin:/bin";
}

// fds 3 and up are marked close-on-exec (Boost.Process's own error pipe already is, so a failed
// exec can still be reported).
void closeExtraFdsOnExec() noexcept {
    if (::close_range(3, UINT_MAX, CLOSE_RANGE_CLOEXEC) == 0) return;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(dir)) {
            int fd = std::atoi(e->d_name);
            if (fd > 2 && fd != ::dirfd(dir)) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        ::closedir(dir);
    }
}

struct Pipe {
    int read = -1, write = -1;
    void close() {
        if (read >= 0) ::close(read);
        if (write >= 0) ::close(write);
        read = write = -1;
    }
};

// Everything done between fork and exec, in the order an init needs it.
struct ChildSetup : bp::extend::handler {
    const InheritedSignals& signals;
    const SpawnRequest& request;
    const char* exe;
    char** argv;
    char** envp; // nullptr: keep the init's
    Pipe output;
    char oom_score[16] = {}; // the child's oom_score_adj, as written to /proc; "" leaves it as inherited

    template <class Executor>
    void fail(Executor& exec, const char* what) const {
        exec.set_error(std::error_code(errno, std::generic_category()), what);
        ::_exit(exit_code::kCannotExecute);
    }

    template <class Executor>
    void on_exec_setup(Executor& exec) const {
        if (request.own_process_group && ::setpgid(0, 0) != 0) fail(exec, "setpgid");
        // Still fully blocked here, so tcsetpgrp from a background group raises no SIGTTOU.
        if (request.take_terminal && ::isatty(STDIN_FILENO)) ::tcsetpgrp(STDIN_FILENO, ::getpgrp());
        if (!request.workdir.empty() && ::chdir(request.workdir.c_str()) != 0) fail(exec, "chdir");
        if (output.write >= 0) {
            int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (null < 0 || ::dup2(null, STDIN_FILENO) < 0 || ::dup2(output.write, STDOUT_FILENO) < 0 ||
                ::dup2(output.write, STDERR_FILENO) < 0)
                fail(exec, "redirect output");
        }
        // Best effort: a /proc that cannot be written must not cost the deployment.
        if (oom_score[0] != '\0') {
            int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                [[maybe_unused]] ssize_t n = ::write(fd, oom_score, std::strlen(oom_score));
                ::close(fd);
            }
        }
        closeExtraFdsOnExec();
        signals.restoreInChild();
        exec.exe = exe;
        exec.cmd_line = argv;
        if (envp) exec.env = envp;
    }
};

// The init's oom_score_adj plus `raise`, within the kernel's bound of 1000, as the text to write
// (read here: the child must not allocate). "" when there is nothing to raise or /proc says nothing.
void oomScoreText(int raise, char (&out)[16]) {
    if (raise <= 0) return;
    int fd = ::open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[16] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return;
    int own = std::atoi(buf);
    std::snprintf(out, sizeof out, "%d", std::min(own + raise, 1000));
}

// Whether the init's own process group holds the terminal: only then may it hand it over.
bool ownsTerminal() {
    if (!::isatty(STDIN_FILENO)) return false;
    return ::tcgetpgrp(STDIN_FILENO) == ::getpgrp();
}

} // namespace

Spawned Spawner::spawn(const SpawnRequest& request) const {
    if (request.argv.empty()) throw SpawnError("empty command", std::make_error_code(std::errc::invalid_argument), exit_code::kNotFound);
    const std::string& name = request.argv.front();
    std::string search = pathOf(request.environment);
    ResolvedCommand resolved = resolveCommand(name, search.c_str());
    if (resolved.error)
        throw SpawnError(name + ": " + resolved.error.message(), resolved.error, resolved.exitCode());

    if (!request.workdir.empty() && ::access(request.workdir.c_str(), X_OK) != 0)
        throw SpawnError(name + ": working folder " + request.workdir + ": " + std::strerror(errno),
                         std::error_code(errno, std::generic_category()), exit_code::kCannotExecute);

    CStrings argv(request.argv);
    CStrings envp(request.environment);
    SpawnRequest effective = request;
    effective.take_terminal = request.take_terminal && request.own_process_group && ownsTerminal();
    ChildSetup setup{{}, signals_, effective, resolved.path.c_str(), argv.data(),
                     envp.empty() ? nullptr : envp.data(), {}, {}};
    oomScoreText(request.oom_score_raise, setup.oom_score);
    if (request.capture_output) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            throw SpawnError("pipe: " + std::string(std::strerror(errno)), std::error_code(errno, std::generic_category()), exit_code::kInternal);
        setup.output = {fds[0], fds[1]};
    }

    std::error_code ec;
    bp::child child(bp::exe = resolved.path, setup, ec);
    if (ec) {
        setup.output.close();
        int code = (ec.value() == ENOENT || ec.value() == ENOTDIR) ? exit_code::kNotFound : exit_code::kCannotExecute;
        throw SpawnError(name + ": " + ec.message(), ec, code);
    }
    Spawned spawned{child.id(), setup.output.read};
    child.detach(); // the Reaper owns its exit status; ~child must not kill or wait for it
    // Also from the parent: a signal to the group right after spawn must not miss the child.
    if (request.own_process_group) ::setpgid(spawned.pid, spawned.pid);
    if (setup.output.write >= 0) ::close(setup.output.write);
    return spawned;
}

} // namespace nixproc
