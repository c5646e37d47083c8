#include <algorithm>
#include <string_view>
#include "support/Harness.hpp"

#include "process/Children.hpp"

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/stat.h>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <stdexcept>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace harness {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

int ms(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

std::string seconds(std::chrono::milliseconds d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(d.count()) / 1000);
    return text;
}

std::string quoted(const std::string& text) { return "\"" + text + "\""; }

constexpr std::size_t kReportMax = 64 * 1024; // of each output, the end: a CI log stays readable

} // namespace

Child::Child(const std::vector<std::string>& argv, const Options& options) {
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
        command_ += (command_.empty() ? "" : " ") + a;
    }
    args.push_back(nullptr);
    started_ = std::chrono::steady_clock::now();
    pty_ = options.pty;
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (options.pty) {
        pid_ = ::forkpty(&out_fd_, nullptr, nullptr, nullptr);
    } else {
        if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) fail("pipe");
        pid_ = ::fork();
    }
    if (pid_ < 0) fail("fork");
    if (pid_ == 0) {
        if (!options.pty) {
            ::setpgid(0, 0); // its own group, so that ~Child reaches the namespace's init too
            ::dup2(out[1], STDOUT_FILENO);
            ::dup2(err[1], STDERR_FILENO);
            int null = ::open("/dev/null", O_RDONLY);
            ::dup2(null, STDIN_FILENO);
        }
        for (int fd : options.keep_fds) ::fcntl(fd, F_SETFD, 0);
        // A test never reaches for the network (nor writes ~/.nix-channels) unless it says so: the
        // init's default channel, upstream's nixpkgs-unstable, is off here; options.env may set it.
        ::setenv("NIXPROC_INIT_BOOTSTRAP_CHANNEL", "", 0);
        // Nor does an init share the host's /run/nixproc-init/control.sock with the tests beside
        // it: the control tests give each init a socket of its own (and initctl reads the same
        // variable, so it is left alone for other programs).
        // The init named as an argument, or inside a shell script (sh -c '... exec .../nixproc-init -c ...').
        bool runs_init = std::any_of(args.begin(), args.end(), [](const char* a) {
            if (!a) return false;
            std::string_view arg(a);
            for (auto at = arg.find("/nixproc-init"); at != std::string_view::npos; at = arg.find("/nixproc-init", at + 1)) {
                auto end = at + std::string_view("/nixproc-init").size();
                if (end == arg.size() || arg[end] == ' ') return true;
            }
            return false;
        });
        if (runs_init) ::setenv("NIXPROC_INIT_CONTROL_SOCKET", "", 0);
        for (const auto& kv : options.env) ::putenv(const_cast<char*>(kv.c_str()));
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    if (!options.pty) {
        ::close(out[1]);
        ::close(err[1]);
        out_fd_ = out[0];
        err_fd_ = err[0];
    }
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd_ < 0) fail("pidfd_open");
}

Child::~Child() {
    if (!status_) {
        // unshare and the init it forked share this group; the namespace dies with its init.
        ::kill(-pid_, SIGKILL);
        int st;
        ::waitpid(pid_, &st, 0);
    }
    for (int fd : {pidfd_, out_fd_, err_fd_})
        if (fd >= 0) ::close(fd);
}

bool Child::pump(std::chrono::milliseconds timeout) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
    if (n < 0 && errno != EINTR) fail("poll");
    if (n <= 0) return false;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
        if (got > 0) (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(got));
        else { // EOF (or EIO on a pty whose last holder left)
            ::close(fds[i].fd);
            (i == 0 ? out_fd_ : err_fd_) = -1;
        }
    }
    return true;
}

std::optional<std::string> Child::readLine(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto nl = out_.find('\n', line_pos_);
        if (nl != std::string::npos) {
            std::string line = out_.substr(line_pos_, nl - line_pos_);
            line_pos_ = nl + 1;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            return line;
        }
        if (out_fd_ < 0) {
            report("readLine", "its stdout closed before a whole line", line_pos_);
            return std::nullopt;
        }
        if (!pump(std::chrono::milliseconds(ms(deadline))) && ms(deadline) == 0) {
            report("readLine", "no line on its stdout after " + seconds(timeout), line_pos_);
            return std::nullopt;
        }
    }
}

bool Child::expect(const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto at = out_.find(needle, expect_pos_);
        if (at != std::string::npos) {
            expect_pos_ = at + needle.size();
            return true;
        }
        if (out_fd_ < 0) {
            report("expect", "its stdout closed without " + quoted(needle), expect_pos_);
            return false;
        }
        if (!pump(std::chrono::milliseconds(ms(deadline))) && ms(deadline) == 0) {
            report("expect", "no " + quoted(needle) + " on its stdout after " + seconds(timeout), expect_pos_);
            return false;
        }
    }
}

bool Child::expectLog(const std::string& needle, std::chrono::milliseconds timeout) {
    return expectLog(needle, timeout, {});
}

bool Child::expectLog(const std::string& needle, std::chrono::milliseconds timeout, const std::vector<std::string>& failures) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (err_.find(needle) != std::string::npos) return true;
        for (const auto& failure : failures) {
            if (err_.find(failure) == std::string::npos) continue;
            report("expectLog", quoted(failure) + " in its stderr: " + quoted(needle) + " will not come", std::string::npos);
            return false;
        }
        if (out_fd_ < 0 && err_fd_ < 0) {
            report("expectLog", "its output closed without " + quoted(needle) + " in its stderr", std::string::npos);
            return false;
        }
        if (!pump(std::chrono::milliseconds(ms(deadline))) && ms(deadline) == 0) {
            report("expectLog", "no " + quoted(needle) + " in its stderr after " + seconds(timeout), std::string::npos);
            return false;
        }
    }
}

void Child::report(const std::string& wait, const std::string& why, std::size_t stdout_from) {
    // What is already in the pipes belongs to the story (bounded: a chatty child never ends it).
    for (int i = 0; i < 16 && (out_fd_ >= 0 || err_fd_ >= 0) && pump(0ms); ++i) {}
    std::string text = "harness: " + wait + " on pid " + std::to_string(pid_) + " (" + command_ + "): " + why + "\n";
    auto show = [&text](const std::string& what, const std::string& body) {
        bool cut = body.size() > kReportMax;
        text += "harness: its " + what + " (" + std::to_string(body.size()) + " bytes" + (cut ? ", the last 64 KiB" : "") + "):\n";
        text += cut ? body.substr(body.size() - kReportMax) : body;
        if (!body.empty() && body.back() != '\n') text += "\n";
        text += "harness: end of its " + what + "\n";
    };
    if (!pty_) show("stderr so far", err_);
    if (stdout_from < out_.size()) show("stdout not yet read", out_.substr(stdout_from));
    else if (pty_ && stdout_from == std::string::npos) show("terminal output so far", out_); // its stderr too
    std::cerr << text << std::flush;
}

void Child::send(const std::string& bytes) {
    if (::write(out_fd_, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) fail("write to pty");
}

int Child::wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
        // Keep draining its output meanwhile, so a chatty child never blocks on a full pipe.
        pollfd fds[3] = {{pidfd_, POLLIN, 0}, {out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
        int n = ::poll(fds, 3, ms(deadline));
        if (n < 0 && errno != EINTR) fail("poll");
        if (n == 0) {
            report("wait", "still running after " + seconds(timeout), line_pos_);
            throw std::runtime_error("timed out waiting for pid " + std::to_string(pid_) + " (" + command_ + ") to exit");
        }
        if (fds[1].revents || fds[2].revents) pump(0ms);
        if (!(fds[0].revents & POLLIN)) continue;
        int st = 0;
        if (::waitpid(pid_, &st, 0) != pid_) fail("waitpid");
        status_ = st;
        exit_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    }
    while ((out_fd_ >= 0 || err_fd_ >= 0) && pump(5s)) {}
    return WIFEXITED(*status_) ? WEXITSTATUS(*status_) : 128 + WTERMSIG(*status_);
}

const std::string& initBinary() {
    static const std::string path = NIXPROC_INIT_BIN;
    return path;
}

const std::string& testkit() {
    static const std::string path = TESTKIT_BIN;
    return path;
}

std::vector<std::string> inPidNamespace(std::vector<std::string> command) {
    std::vector<std::string> argv{"unshare", "--pid", "--fork", "--mount-proc"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
}

std::vector<std::string> inPidNamespaceWithBind(const std::string& source, const std::string& target,
                                                std::vector<std::string> command) {
    std::vector<std::string> argv{"/bin/sh", "-c", "mount --bind \"$1\" \"$2\" || exit 125; shift 2; exec \"$@\"", "bind",
                                  source, target};
    argv.insert(argv.end(), command.begin(), command.end());
    return inPidNamespace(std::move(argv));
}

pid_t namespaceInit(pid_t unshare_pid) {
    auto children = nixproc::childrenOf(unshare_pid);
    if (children.size() != 1) throw std::runtime_error("unshare has " + std::to_string(children.size()) + " children");
    return children.front();
}

std::vector<std::string> deployFailures(int n) {
    std::string deploy = "deploy #" + std::to_string(n) + ": ";
    return {deploy + "failed", deploy + "refused", deploy + "timed out", deploy + "interrupted"};
}

int count(const std::string& haystack, const std::string& needle) {
    int n = 0;
    for (auto at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + needle.size())) ++n;
    return n;
}

} // namespace harness

namespace harness {

TempDir::TempDir() {
    char tmpl[] = "/tmp/nixproc-test-XXXXXX";
    if (!::mkdtemp(tmpl)) fail("mkdtemp");
    path = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}

std::string TempDir::write(const std::string& name, const std::string& text, unsigned mode) const {
    std::string full = path + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::ofstream(full) << text;
    ::chmod(full.c_str(), mode);
    return full;
}

Fifo::Fifo(std::string path) : path_(std::move(path)) {
    if (::mkfifo(path_.c_str(), 0600) != 0) fail("mkfifo " + path_);
    fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    keep_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC); // never EOF while writers come and go
}

Fifo::~Fifo() {
    ::close(fd_);
    ::close(keep_);
}

std::optional<std::string> Fifo::readLine(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto nl = buffer_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, ms(deadline)) <= 0) return std::nullopt;
        char buf[4096];
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n > 0) buffer_.append(buf, static_cast<size_t>(n));
    }
}

std::string readFile(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

} // namespace harness
