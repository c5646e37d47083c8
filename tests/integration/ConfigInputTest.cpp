// The configuration as the init meets it at start-up (issue #8, items 5 and 6), through the real
// binary: whatever sits at the configuration's path (a FIFO, a folder, a file that is not YAML
// text) ends the init at once with status 2 and the file's name, and until the event loop runs,
// a stop signal ends it at once too, whatever start-up is stuck on.
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace harness;

namespace {

std::vector<std::string> init(std::vector<std::string> args) {
    args.insert(args.begin(), initBinary());
    return inPidNamespace(std::move(args));
}

// The kernel function a process sleeps in ("pipe_write", "anon_pipe_write" since Linux 6.16,
// "do_select"...), "" when it runs.
std::string wchan(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/wchan");
    std::string name;
    std::getline(in, name);
    return name == "0" ? "" : name;
}

// Polls (there is no event for "a process went to sleep in the kernel", nor for "unshare has
// forked") until the namespace's PID 1 sleeps in a kernel function whose name contains `function`;
// its pid, or -1 after the deadline.
pid_t initSleepingIn(pid_t unshare_pid, const std::string& function, std::chrono::milliseconds deadline = 10s) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
        auto children = nixproc::childrenOf(unshare_pid);
        if (children.size() == 1 && wchan(children.front()).find(function) != std::string::npos) return children.front();
        ::usleep(10000);
    }
    return -1;
}

} // namespace

TEST_CASE("a FIFO as the configuration file ends the init at once with status 2, naming it", "[config][start-up]") {
    TempDir t;
    std::string fifo = t / "init.yaml";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    for (auto args : {std::vector<std::string>{"--check-config", "-c", fifo}, {"-c", fifo}}) {
        Child c(init(args));
        CHECK(c.wait(10s) == 2); // throws (fails) when the init blocks on the FIFO
        CHECK(c.secondsToExit() < 5);
        CHECK_THAT(c.stderrText(), Catch::Contains("configuration: " + fifo + ": is a FIFO, not a regular file"));
    }
}

TEST_CASE("a folder as the configuration file, as Docker makes for a missing bind-mount source, is status 2", "[config][start-up]") {
    TempDir t;
    std::string folder = t / "init.yaml";
    REQUIRE(::mkdir(folder.c_str(), 0755) == 0);
    Child c(init({"-c", folder}));
    CHECK(c.wait(10s) == 2);
    CHECK_THAT(c.stderrText(), Catch::Contains(folder + ": is a folder, not a regular file (a bind mount of a file"));
    CHECK_THAT(c.stderrText(), !Catch::Contains("terminate called"));
}

TEST_CASE("the default /etc/nixproc/init.yaml being a folder is status 2 with the same message", "[config][start-up]") {
    // A private /etc (a tmpfs in the test's own mount namespace) with init.yaml as a folder.
    Child c(inPidNamespace({"sh", "-c", "mount -t tmpfs nixproc-test /etc && mkdir -p /etc/nixproc/init.yaml && exec \"$0\" \"$@\"",
                            initBinary(), "--", testkit(), "catch-all"}));
    CHECK(c.wait(10s) == 2);
    CHECK_THAT(c.stderrText(), Catch::Contains("configuration: /etc/nixproc/init.yaml: is a folder, not a regular file"));
    CHECK(c.outputText().empty()); // the command never started
}

TEST_CASE("a configuration yaml-cpp cannot convert is status 2 with file, line and column, not an abort", "[config][start-up]") {
    TempDir t;
    auto run = [&](const std::string& yaml) {
        Child c(init({"--check-config", "-c", t.write("init.yaml", yaml)}));
        int code = c.wait(10s);
        return std::pair{code, c.stderrText()};
    };
    auto [code, err] = run("[a]: 1\n");
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(t / "init.yaml:1:1: a key must be a name, not a list"));
    std::tie(code, err) = run("processes: /etc/\xff\xfe.nix\n");
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(t / "init.yaml:1:17: not UTF-8 text (byte 0xff)"));
    std::tie(code, err) = run(std::string(100000, '['));
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(t / "init.yaml:1:1: not valid YAML: nested too deeply"));
}

TEST_CASE("a stop signal while start-up is stuck ends the init at once", "[config][start-up]") {
    // What start-up is stuck on here is its stderr: a pipe that is full and that nobody reads (a log
    // reader that stopped), so the line about the bad configuration cannot be written. Any step that
    // hangs is the same to the init: its signals are blocked until the event loop reads them.
    for (auto [sig, code] : {std::pair{SIGTERM, 143}, std::pair{SIGINT, 130}}) {
        TempDir t;
        std::string log = t / "stderr";
        REQUIRE(::mkfifo(log.c_str(), 0600) == 0);
        int reader = ::open(log.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC); // never reads
        int filler = ::open(log.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        REQUIRE(reader >= 0);
        REQUIRE(filler >= 0);
        std::string block(4096, 'x');
        while (::write(filler, block.data(), block.size()) > 0) {
        }
        REQUIRE(errno == EAGAIN);
        Child c(inPidNamespace({"sh", "-c", "exec \"$0\" \"$@\" 2>" + log, initBinary(), "-c", t.write("init.yaml", "frobnicate: 1\n")}));
        pid_t pid1 = initSleepingIn(c.pid(), "pipe_write");
        INFO("signal " << sig);
        REQUIRE(pid1 > 0);
        REQUIRE(::kill(pid1, sig) == 0);
        CHECK(c.wait(10s) == code); // throws (fails) when the signal waits blocked behind the write
        CHECK(c.secondsToExit() < 9);
        ::close(filler);
        ::close(reader);
    }
}

TEST_CASE("a stop signal already pending when the init starts ends it before it reads anything", "[config][start-up]") {
    // The signal is sent while blocked, so that it waits across exec: the init meets it at once.
    TempDir t;
    std::string fifo = t / "init.yaml";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    Child c(inPidNamespace({testkit(), "with-signals", "--block", std::to_string(SIGTERM), "--", "sh", "-c",
                            "kill -TERM $$ && exec \"$0\" \"$@\"", initBinary(), "-c", fifo, "--", testkit(), "catch-all"}));
    CHECK(c.wait(10s) == 143);
    CHECK_THAT(c.stderrText(), Catch::Contains("nixproc-init: SIGTERM during start-up: exiting"));
    CHECK(c.outputText().empty());
}

TEST_CASE("a usage error shows the control characters of the argument it names", "[config][start-up]") {
    Child c({initBinary(), "--frob\x1b[2J\r", "true"});
    CHECK(c.wait(10s) == 2);
    CHECK_THAT(c.stderrText(), Catch::Contains("nixproc-init: unknown option --frob\\x1b[2J\\r\n"));
}
