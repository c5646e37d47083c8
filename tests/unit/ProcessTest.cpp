#include "init/SignalRouter.hpp"
#include "process/ChildJob.hpp"
#include "process/Children.hpp"
#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"
#include "LogCapture.hpp"

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <deque>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <thread>
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

// ChildJob on an event loop, the way the init drives it: SIGCHLD through a signalfd to the Reaper,
// the test process a child subreaper so that the orphans of a job come back to it.
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;


// Who is in group `pgid` (zombies included), as the init itself sees it.
std::vector<pid_t> groupOf(pid_t pgid) {
    std::vector<pid_t> members;
    for (const auto& m : membersOfGroup(pgid)) members.push_back(m.pid);
    return members;
}

bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

long statusKb(const std::string& key) {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with(key + ":")) return std::atol(line.c_str() + key.size() + 1);
    return -1;
}

// How much the peak RSS of this process rose above its RSS before `work` ran, in KiB.
template <class Work>
long peakGrowthKb(Work&& work) {
    std::ofstream("/proc/self/clear_refs") << "5"; // resets VmHWM to the current RSS
    long before = statusKb("VmRSS");
    work();
    return statusKb("VmHWM") - before;
}

double cpuSeconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true; // ASan's quarantine keeps freed blocks: RSS says nothing there
#else
constexpr bool kSanitized = false;
#endif

// The test process as a child subreaper: what its children leave is re-parented to it. Nothing
// outlives the guard: what is left is killed and reaped, then it stops subreaping.
struct Subreaper {
    Subreaper() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
    ~Subreaper() {
        for (int round = 0; round < 100; ++round) {
            auto kids = childrenOf(::getpid());
            if (kids.empty()) break;
            for (pid_t k : kids) ::kill(k, SIGKILL);
            for (pid_t k : kids) ::waitpid(k, nullptr, 0);
        }
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    }
};

// Blocks until `pid` (a child) has exited, without reaping it.
void awaitExit(pid_t pid) {
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT);
}

struct JobLoop {
    Subreaper subreaper;
    BlockedSignals blocked;
    boost::asio::io_context io;
    Reaper reaper;
    Spawner spawner{blocked.signals};
    SignalRouter router{io, blocked.signals.blocked(), [this](const ReceivedSignal& s) {
                            if (s.signo == SIGCHLD) reaper.drain();
                        }};
    LogCapture log;
    std::optional<JobResult> result;
    std::shared_ptr<ChildJob> job;
    Clock::time_point done_at;

    void start(JobSpec spec, std::function<void(const JobResult&)> also = {}) {
        result.reset();
        job = ChildJob::start(io, spawner, reaper, std::move(spec), [this, also](const JobResult& r) {
            done_at = Clock::now();
            if (also) also(r);
            result = r;
        });
    }

    // Runs the loop until the job is done; false when it is not within `limit`.
    bool finish(std::chrono::milliseconds limit = 30s) {
        runUntil([this] { return result.has_value(); }, limit);
        if (result) return true;
        job->stop(); // leave nothing behind for the next test
        ::kill(-job->pid(), SIGKILL);
        runUntil([this] { return result.has_value(); }, 10s);
        return false;
    }

    template <class Pred>
    void runUntil(Pred done, std::chrono::milliseconds limit) {
        auto until = Clock::now() + limit;
        while (!done() && Clock::now() < until) io.run_one_until(until);
    }

    std::optional<JobResult> run(JobSpec spec, std::chrono::milliseconds limit = 30s) {
        start(std::move(spec));
        return finish(limit) ? result : std::nullopt;
    }
};

JobSpec shell(const std::string& script) { return {.argv = {"sh", "-c", script}, .log_prefix = "t |"}; }

} // namespace

// A leader of its own group that forks a member, which waits for EOF on `hold` (or dies), then exits.
pid_t forkLeaderWithMember(int hold[2], pid_t* member) {
    int told[2];
    REQUIRE(::pipe(told) == 0);
    pid_t leader = ::fork();
    if (leader == 0) {
        ::setpgid(0, 0);
        pid_t m = ::fork();
        if (m == 0) {
            ::close(hold[1]);
            char c;
            ::_exit(::read(hold[0], &c, 1) == 0 ? 0 : 1);
        }
        if (::write(told[1], &m, sizeof m) != sizeof m) ::_exit(2);
        ::_exit(0);
    }
    ::setpgid(leader, leader);
    ::close(hold[0]);
    ::close(told[1]);
    REQUIRE(::read(told[0], member, sizeof *member) == sizeof *member);
    ::close(told[0]);
    return leader;
}

TEST_CASE("watchGroup: the handler runs at the end of the drain after which the group is empty, a zombie still counting", "[process][reaper]") {
    Subreaper subreaper;
    Reaper reaper;
    int hold[2];
    REQUIRE(::pipe(hold) == 0);
    pid_t member = 0;
    pid_t leader = forkLeaderWithMember(hold, &member);
    int empty = 0;
    reaper.watch(leader, [&](pid_t p, int) { reaper.watchGroup(p, [&] { ++empty; }); });
    awaitExit(leader);
    reaper.drain();
    CHECK_FALSE(reaper.watching(leader));
    CHECK(reaper.watchingGroup(leader)); // the member lives on, now our child
    CHECK(empty == 0);

    ::close(hold[1]);
    awaitExit(member);
    CHECK(::kill(-leader, 0) == 0); // the member is a zombie: still in the group
    reaper.drain();
    CHECK(empty == 1);
    CHECK_FALSE(reaper.watchingGroup(leader));
    CHECK(gone(member));
}

TEST_CASE("AtExit::KillGroup: the group gets SIGKILL before its leader is reaped, and an empty group is told in the same drain", "[process][reaper]") {
    Subreaper subreaper;
    Reaper reaper;
    int hold[2];
    REQUIRE(::pipe(hold) == 0);
    pid_t member = 0;
    pid_t leader = forkLeaderWithMember(hold, &member);
    int empty = 0;
    reaper.watch(leader, [&](pid_t p, int) { reaper.watchGroup(p, [&] { ++empty; }); }, Reaper::AtExit::KillGroup);
    awaitExit(leader);
    reaper.drain(); // kills the member, which cannot end by itself while we hold the pipe open
    awaitExit(member); // at once if that drain has reaped it already
    reaper.drain();
    CHECK(gone(member));
    CHECK(reaper.orphansReaped() == 1);
    CHECK(empty == 1);
    ::close(hold[1]);

    // A group that is empty when its leader is reaped: the handler runs in that same drain.
    pid_t alone = ::fork();
    if (alone == 0) {
        ::setpgid(0, 0);
        ::_exit(0);
    }
    reaper.watch(alone, [&](pid_t p, int) { reaper.watchGroup(p, [&] { ++empty; }); }, Reaper::AtExit::KillGroup);
    awaitExit(alone);
    reaper.drain();
    CHECK(empty == 2);
}

TEST_CASE("a group handler that starts a child is seen by the same drain's answer", "[process][reaper]") {
    Subreaper subreaper;
    Reaper reaper;
    pid_t first = forkExiting(0);
    int hold[2];
    REQUIRE(::pipe(hold) == 0);
    pid_t next = -1;
    reaper.watch(first, [&](pid_t p, int) {
        reaper.watchGroup(p, [&] {
            next = ::fork();
            if (next == 0) {
                char c;
                ::close(hold[1]);
                ::_exit(::read(hold[0], &c, 1) == 0 ? 0 : 1);
            }
        });
    });
    awaitExit(first);
    CHECK(reaper.drain() == Reaper::Children::Remain);
    REQUIRE(next > 0);
    ::close(hold[0]);
    ::close(hold[1]);
    awaitExit(next);
    CHECK(reaper.drain() == Reaper::Children::None);
}

TEST_CASE("a job's output is logged line by line behind its prefix, a last line without newline too", "[process][job]") {
    JobLoop loop;
    auto r = loop.run(shell("echo one; echo two >&2; printf three; exit 3"));
    REQUIRE(r);
    CHECK(r->exit_code == 3);
    CHECK(r->description == "exited with status 3");
    CHECK(loop.log.last() == std::deque<std::string>{"t | one", "t | two", "t | three"});
}

TEST_CASE("a job that exits 0 but leaves a worker in its group: the worker is killed and reaped before done", "[process][job]") {
    JobLoop loop;
    pid_t worker = 0;
    bool worker_gone_at_done = false;
    std::size_t group_at_done = 99;
    loop.start(shell("sleep 30 & echo $!"), [&](const JobResult&) {
        worker = std::atoi(loop.log.last().back().c_str() + 4);
        worker_gone_at_done = gone(worker);
        group_at_done = groupOf(loop.job->pid()).size();
    });
    REQUIRE(loop.finish());
    CHECK(loop.result->ok());
    CHECK(worker > 0);
    CHECK(worker_gone_at_done);
    CHECK(group_at_done == 0);
}

TEST_CASE("a job that starts services keeps what it leaves in its group when it succeeds, not when it fails", "[process][job]") {
    for (int code : {0, 1}) {
        DYNAMIC_SECTION("exit " << code) {
            JobLoop loop;
            auto spec = shell("sleep 30 & echo $!; exit " + std::to_string(code));
            spec.keep_group_on_success = true; // an rc script's start: LFS start_daemon, nohup ... &
            pid_t service = 0;
            bool alive_at_done = false;
            loop.start(spec, [&](const JobResult&) {
                service = std::atoi(loop.log.last().back().c_str() + 4);
                alive_at_done = !gone(service);
            });
            REQUIRE(loop.finish());
            CHECK(service > 0);
            CHECK(alive_at_done == (code == 0));
            if (service > 0 && !gone(service)) {
                ::kill(service, SIGKILL);
                ::waitpid(service, nullptr, 0); // the test process is the subreaper
            }
        }
    }
}

TEST_CASE("a timed-out job: its whole group is killed, also what ignores SIGTERM, before done", "[process][job]") {
    JobLoop loop;
    auto spec = shell("(trap '' TERM; sleep 30) & exec sleep 100");
    spec.timeout = 200ms;
    spec.kill_after = 20s; // the leader goes at SIGTERM: the rest must not wait for this
    std::vector<pid_t> group_at_done{-1};
    loop.start(spec, [&](const JobResult&) { group_at_done = groupOf(loop.job->pid()); });
    auto started = Clock::now();
    REQUIRE(loop.finish());
    CHECK(loop.result->timed_out);
    CHECK(loop.result->description == "killed by SIGTERM");
    CHECK(group_at_done.empty());
    CHECK(loop.done_at - started < 5s);
}

TEST_CASE("stop() ends a job's whole group before done", "[process][job]") {
    JobLoop loop;
    auto spec = shell("(trap '' TERM; sleep 30) & echo started; exec sleep 100");
    spec.kill_after = 20s;
    std::vector<pid_t> group_at_done{-1};
    loop.start(spec, [&](const JobResult&) { group_at_done = groupOf(loop.job->pid()); });
    loop.runUntil([&] { return loop.log.contains("t | started"); }, 10s);
    REQUIRE(loop.log.contains("t | started"));
    loop.job->stop();
    REQUIRE(loop.finish());
    CHECK(loop.result->description == "killed by SIGTERM");
    CHECK(group_at_done.empty());
}

TEST_CASE("a group member that is not ours to reap holds done back for kill_after at most, and is named", "[process][job]") {
    JobLoop loop;
    // The leader's child C forks G (in the job's group), then leaves the group with setsid and
    // never reaps: after SIGKILL, G is a zombie of C, in the group until C reaps it or dies.
    auto spec = JobSpec{.argv = {"perl", "-MPOSIX", "-e",
                                 "$| = 1; pipe(R, W); my $c = fork; if ($c == 0) { my $g = fork; if ($g == 0) { exec 'sleep', '1000' } "
                                 "POSIX::setsid(); print \"$g $$\\n\"; close W; sleep 1000; exit 0 } close W; <R>; exit 0"},
                        .log_prefix = "t |",
                        .kill_after = 1s};
    loop.start(spec);
    auto started = Clock::now();
    REQUIRE(loop.finish());
    CHECK(loop.result->ok());
    CHECK(loop.done_at - started >= 1s);
    CHECK(loop.done_at - started < 5s);
    pid_t g = 0, c = 0;
    for (const auto& l : loop.log.last())
        if (std::sscanf(l.c_str(), "t | %d %d", &g, &c) == 2) break;
    REQUIRE(g > 0);
    CHECK(loop.log.contains("pid " + std::to_string(g)));
    CHECK(loop.log.contains("outlived SIGKILL"));
    // C is out of the group: not the job's to kill. It goes now, and G's zombie with it.
    CHECK_FALSE(gone(c));
    ::kill(c, SIGKILL);
    loop.runUntil([&] { return gone(c) && gone(g); }, 10s);
    CHECK(gone(c));
    CHECK(gone(g));
}

TEST_CASE("a line longer than 64 KiB is cut with a marker, the rest of it skipped, and UTF-8 is not split", "[process][job][output]") {
    JobLoop loop;
    auto r = loop.run(shell("head -c 70000 /dev/zero | tr '\\0' a; printf '\\nshort\\n'; "
                            "perl -e 'print \"b\", \"\\xc3\\xa9\" x 40000, \"\\n\"'"));
    REQUIRE(r);
    const std::string marker = " … [line cut at 65536 bytes]";
    REQUIRE(loop.log.last().size() == 3);
    // Compared piecewise: Catch would print all 65 KiB of a failed comparison.
    const std::string& a = loop.log.last()[0];
    CHECK(a.size() == 4 + 65536 + marker.size());
    CHECK(a.find_first_not_of('a', 4) == 4 + 65536);
    CHECK(a.ends_with(marker));
    CHECK(loop.log.last()[1] == "t | short");
    const std::string& b = loop.log.last()[2];
    CHECK(b.size() == 4 + 65535 + marker.size()); // the 2-byte é at the cut is left out whole
    CHECK(b.substr(4 + 65535 - 2, 2) == "\xc3\xa9");
    CHECK(b.ends_with(marker));
}

TEST_CASE("a line of 256 MB without newline: memory stays flat and CPU time is linear", "[process][job][output]") {
    JobLoop loop;
    std::optional<JobResult> r;
    double cpu = cpuSeconds();
    long growth = peakGrowthKb([&] {
        r = loop.run(shell("head -c 268435456 /dev/zero | tr '\\0' x; echo; echo after"), 30s);
    });
    cpu = cpuSeconds() - cpu;
    REQUIRE(r);
    CHECK(r->ok());
    CHECK(loop.log.last().size() == 2);
    CHECK(loop.log.last().back() == "t | after");
    CHECK(cpu < 5.0);
    if (!kSanitized) CHECK(growth < 16 * 1024);
    INFO("peak RSS growth " << growth << " KiB, CPU " << cpu << " s");
    SUCCEED();
}

TEST_CASE("a failing check's 2 million lines: the last ones are shown with the count of those dropped, memory stays flat", "[process][job][output]") {
    JobLoop loop;
    auto spec = shell("seq 2000000; exit 1");
    spec.output_only_on_failure = true;
    std::optional<JobResult> r;
    double cpu = cpuSeconds();
    long growth = peakGrowthKb([&] { r = loop.run(spec, 60s); });
    cpu = cpuSeconds() - cpu;
    REQUIRE(r);
    CHECK(r->exit_code == 1);
    INFO("peak RSS growth " << growth << " KiB, CPU " << cpu << " s, " << loop.log.count() << " lines logged");
    CHECK(loop.log.count() == 1001);
    CHECK(loop.log.last().front() == "t | … 1999000 earlier lines not kept");
    CHECK(loop.log.last()[1] == "t | 1999001");
    CHECK(loop.log.last().back() == "t | 2000000");
    CHECK(cpu < 10.0);
    if (!kSanitized) CHECK(growth < 16 * 1024);
}

TEST_CASE("a check that succeeds shows none of its output", "[process][job][output]") {
    JobLoop loop;
    auto spec = shell("seq 5000");
    spec.output_only_on_failure = true;
    auto r = loop.run(spec);
    REQUIRE(r);
    CHECK(r->ok());
    CHECK(loop.log.count() == 0);
}

TEST_CASE("a spawn request's oom_score_raise adds to the init's oom_score_adj in the child, up to 1000", "[process][oom]") {
    BlockedSignals blocked;
    Spawner spawner(blocked.signals);
    int own = std::stoi(readAll(::open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC)));
    auto score = [&](int raise) {
        auto child = spawner.spawn({.argv = {"cat", "/proc/self/oom_score_adj"}, .capture_output = true, .oom_score_raise = raise});
        std::string out = readAll(child.output_fd);
        CHECK(exitCodeOf(waitFor(child.pid)) == 0);
        return std::stoi(out);
    };
    CHECK(score(0) == own);
    CHECK(score(500) == std::min(own + 500, 1000));
    CHECK(score(5000) == 1000);
    CHECK(std::stoi(readAll(::open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC))) == own); // the parent's is untouched
}

TEST_CASE("a job that cannot be started says so once, with the program, the reason and the error", "[process][job]") {
    JobLoop loop;
    auto r = loop.run({.argv = {"definitely-not-a-command"}, .log_prefix = "t |"});
    REQUIRE(r);
    CHECK_FALSE(r->started);
    CHECK(r->exit_code == 127);
    CHECK(r->description == "could not start definitely-not-a-command: No such file or directory");
    CHECK(r->spawn_error == std::errc::no_such_file_or_directory);
}

TEST_CASE("stop() continues a stopped job, so that it sees its SIGTERM before kill_after", "[process][job]") {
    JobLoop loop;
    JobSpec spec = shell("kill -STOP $$; exec sleep 100");
    spec.kill_after = 20s;
    loop.start(spec);
    // No event tells that the job has stopped: looked at every 10 ms, for 10 s at most.
    bool stopped = false;
    for (auto end = Clock::now() + 10s; !stopped && Clock::now() < end; std::this_thread::sleep_for(10ms)) {
        std::string stat = readAll(::open(("/proc/" + std::to_string(loop.job->pid()) + "/stat").c_str(), O_RDONLY | O_CLOEXEC));
        auto close = stat.rfind(')');
        stopped = close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
    }
    REQUIRE(stopped);
    auto sent = Clock::now();
    loop.job->stop();
    REQUIRE(loop.finish(30s));
    CHECK(loop.result->signal == SIGTERM);
    CHECK(loop.done_at - sent < 5s);
}
