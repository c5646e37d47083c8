#include "process/Children.hpp"
#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {

pid_t forkExiting(int code) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(code);
    return pid;
}

// Blocks in the test thread like the init does, and undoes it afterwards.
struct BlockedSignals {
    InheritedSignals signals = InheritedSignals::blockAll();
    ~BlockedSignals() { ::pthread_sigmask(SIG_SETMASK, &signals.originalMask(), nullptr); }
};

std::string readAll(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

int waitFor(pid_t pid) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
}

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("nixproc-unit-" + std::to_string(::getpid()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
};

} // namespace

TEST_CASE("wait statuses become shell-style exit codes", "[process]") {
    CHECK(exitCodeOf(0) == 0);
    CHECK(exitCodeOf(42 << 8) == 42);
    CHECK(exitCodeOf(SIGTERM) == 143);
    CHECK(exitCodeOf(SIGKILL) == 137);
    CHECK(describeStatus(3 << 8) == "exited with status 3");
    CHECK(describeStatus(SIGTERM) == "killed by SIGTERM");
}

TEST_CASE("the Reaper hands each status to its owner and counts the rest as orphans", "[process]") {
    Reaper reaper;
    std::map<pid_t, int> seen;
    pid_t a = forkExiting(3), b = forkExiting(4), stray = forkExiting(5);
    reaper.watch(a, [&](pid_t p, int st) { seen[p] = exitCodeOf(st); });
    reaper.watch(b, [&](pid_t p, int st) { seen[p] = exitCodeOf(st); });
    // All three have exited once waitid says so without reaping them.
    for (pid_t p : {a, b, stray}) {
        siginfo_t info{};
        ::waitid(P_PID, static_cast<id_t>(p), &info, WEXITED | WNOWAIT);
    }
    CHECK(reaper.drain() == Reaper::Children::None);
    CHECK(seen == std::map<pid_t, int>{{a, 3}, {b, 4}});
    CHECK(reaper.orphansReaped() == 1);
    CHECK_FALSE(reaper.watching(a));
}

TEST_CASE("the Reaper says when children remain", "[process]") {
    Reaper reaper;
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t waiting = ::fork();
    if (waiting == 0) {
        char c;
        ::close(p[1]);
        ::_exit(::read(p[0], &c, 1) == 0 ? 0 : 1);
    }
    ::close(p[0]);
    CHECK(reaper.drain() == Reaper::Children::Remain);
    ::close(p[1]);
    CHECK(exitCodeOf(waitFor(waiting)) == 0);
}

TEST_CASE("PATH search: found, not found (127), not executable (126)", "[process]") {
    TempDir dir;
    auto script = dir.path / "tool";
    std::ofstream(script) << "#!/bin/sh\n";
    fs::permissions(script, fs::perms::owner_all);
    auto data = dir.path / "data";
    std::ofstream(data) << "x";
    fs::permissions(data, fs::perms::owner_read);
    std::string path = "/nonexistent:" + dir.path.string();

    CHECK(resolveCommand("tool", path.c_str()).path == script.string());
    auto missing = resolveCommand("nope", path.c_str());
    CHECK(missing.exitCode() == 127);
    CHECK(resolveCommand("data", path.c_str()).exitCode() == 126);
    CHECK(resolveCommand(data.string(), nullptr).exitCode() == 126);
    CHECK(resolveCommand(dir.path.string(), nullptr).exitCode() == 126); // a folder
    CHECK(resolveCommand("sh", nullptr).path == "/usr/bin/sh");
}

TEST_CASE("spawned children get the original mask, no extra fds, their own group", "[process]") {
    BlockedSignals blocked;
    Spawner spawner(blocked.signals);
    int extra = ::dup(STDOUT_FILENO); // not close-on-exec: the Spawner must still keep it from the child
    auto child = spawner.spawn({.argv = {"sh", "-c", "grep SigBlk /proc/self/status; ls /proc/self/fd; ps -o pgid= -p $$"},
                                .capture_output = true});
    ::close(extra);
    std::string out = readAll(child.output_fd);
    CHECK(exitCodeOf(waitFor(child.pid)) == 0);

    char expected[32];
    std::snprintf(expected, sizeof expected, "SigBlk:\t%016llx",
                  static_cast<unsigned long long>(blocked.signals.originalMask().__val[0]));
    CHECK_THAT(out, Catch::StartsWith(expected));
    CHECK_THAT(out, Catch::Contains("\n0\n1\n2\n3\n")); // ls's own directory fd is 3
    CHECK_THAT(out, !Catch::Contains("\n4\n"));
    CHECK_THAT(out, Catch::EndsWith(std::to_string(child.pid) + "\n"));
}

TEST_CASE("spawn errors carry 127 or 126 and leave nothing running", "[process]") {
    BlockedSignals blocked;
    Spawner spawner(blocked.signals);
    try {
        spawner.spawn({.argv = {"definitely-not-a-command"}});
        FAIL("spawned");
    } catch (const SpawnError& e) {
        CHECK(e.exitCode() == 127);
        CHECK_THAT(e.what(), Catch::Contains("definitely-not-a-command"));
    }
    try {
        spawner.spawn({.argv = {"true"}, .workdir = "/no/such/folder"});
        FAIL("spawned");
    } catch (const SpawnError& e) {
        CHECK(e.exitCode() == 126);
        CHECK_THAT(e.what(), Catch::Contains("No such file or directory"));
    }
    while (::waitpid(-1, nullptr, 0) > 0) {} // the forked-but-failed child
    CHECK(childrenOf(::getpid()).empty());
}

TEST_CASE("the environment and working folder of a request are used", "[process]") {
    BlockedSignals blocked;
    Spawner spawner(blocked.signals);
    auto child = spawner.spawn({.argv = {"sh", "-c", "echo $GREETING; pwd"},
                                .environment = {"GREETING=hello", "PATH=/usr/bin:/bin"},
                                .workdir = "/",
                                .capture_output = true});
    CHECK(readAll(child.output_fd) == "hello\n/\n");
    CHECK(exitCodeOf(waitFor(child.pid)) == 0);
}

TEST_CASE("childrenOf lists live children", "[process]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t kid = ::fork();
    if (kid == 0) {
        char c;
        ::close(p[1]);
        ::_exit(::read(p[0], &c, 1));
    }
    ::close(p[0]);
    auto kids = childrenOf(::getpid());
    CHECK(std::find(kids.begin(), kids.end(), kid) != kids.end());
    ::close(p[1]);
    waitFor(kid);
}
