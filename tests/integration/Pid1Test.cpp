// nixproc-init as PID 1 of a real PID namespace (unshare --pid --fork --mount-proc), and as a
// subreaper outside one.
#include "process/Children.hpp"
#include "process/Signals.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <sstream>
#include <yaml-cpp/yaml.h>
#include <csignal>
#include <fcntl.h>
#include <unistd.h>

using namespace harness;

namespace {

std::vector<std::string> init(std::vector<std::string> args) {
    args.insert(args.begin(), initBinary());
    return inPidNamespace(std::move(args));
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// A process the test must not leave behind, whatever a failed check skipped.
struct KillAtEnd {
    pid_t pid;
    ~KillAtEnd() {
        if (pid > 0) ::kill(pid, SIGKILL);
    }
};

std::string cwdOf(pid_t pid) { return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/cwd").string(); }

} // namespace

TEST_CASE("10,000 orphans are reaped and none is left", "[pid1]") {
    Child c(init({"-v", "--", testkit(), "orphans", "10000"}));
    CHECK(c.readLine(120s) == "orphans 10000 left, zombies 0");
    REQUIRE(c.wait(120s) == 0);
    CHECK_THAT(c.stderrText(), Catch::Contains("exiting with status 0 (10000 orphans reaped)"));
}

TEST_CASE("every forwardable signal reaches the child, and the init exits 128+N", "[pid1]") {
    for (int sig = 1; sig <= SIGRTMAX; ++sig) {
        if (!nixproc::isForwardable(sig)) continue;
        DYNAMIC_SECTION(nixproc::signalName(sig)) {
            Child c(init({"--", testkit(), "catch-all"}));
            REQUIRE(c.readLine() == "ready");
            REQUIRE(::kill(namespaceInit(c.pid()), sig) == 0);
            CHECK(c.readLine() == "got " + std::to_string(sig));
            CHECK(c.wait() == 128 + sig);
        }
    }
}

TEST_CASE("with -g a signal goes to the child's whole process group", "[pid1]") {
    // sh's own child (the catch-all) is in sh's group; without -g only sh would get SIGUSR1.
    Child c(init({"-g", "--", "sh", "-c", testkit() + " catch-all; exit 0"}));
    REQUIRE(c.readLine() == "ready");
    REQUIRE(::kill(namespaceInit(c.pid()), SIGUSR1) == 0);
    auto got = c.readLine();
    CHECK(c.wait() == 128 + SIGUSR1); // sh died of SIGUSR1 too
    INFO(c.stderrText());
    CHECK(got == "got " + std::to_string(SIGUSR1));
}

TEST_CASE("a child that ignores SIGTERM is killed when the grace is over", "[pid1]") {
    Child c(init({"-t", "1", "--", testkit(), "ignore-term"}));
    REQUIRE(c.readLine() == "ready");
    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 128 + SIGKILL);
    CHECK(c.secondsToExit() >= 1.0);
    CHECK_THAT(c.stderrText(), Catch::Contains("grace of 1 s is over"));
}

TEST_CASE("leftover processes get SIGTERM when the main child exits, SIGKILL after the grace", "[pid1]") {
    // One leftover stops on SIGTERM, one ignores it; the main child's status is kept.
    Child c(init({"-v", "-t", "1", "--", "bash", "-c",
                  "sleep 1000 & read -r line < <(exec " + testkit() + " ignore-term); echo $line; exit 3"}));
    REQUIRE(c.readLine() == "ready");
    CHECK(c.wait() == 3);
    CHECK_THAT(c.stderrText(), Catch::Contains("stopping the processes left behind"));
    CHECK_THAT(c.stderrText(), Catch::Contains("SIGKILL to everything left"));
}

TEST_CASE("exit codes 0 to 255 pass through", "[pid1]") {
    for (int code = 0; code <= 255; ++code) {
        Child c(init({"-q", "--", "sh", "-c", "exit " + std::to_string(code)}));
        INFO("exit " << code);
        REQUIRE(c.wait() == code);
    }
}

TEST_CASE("a missing command exits 127, a file that cannot be executed 126", "[pid1]") {
    Child missing(init({"--", "no-such-command-anywhere"}));
    CHECK(missing.wait() == 127);
    CHECK_THAT(missing.stderrText(), Catch::Contains("no-such-command-anywhere: No such file or directory"));
    Child not_exec(init({"--", "/etc/hostname"}));
    CHECK(not_exec.wait() == 126);
    Child usage(init({"--no-such-option"}));
    CHECK(usage.wait() == 2);
}

TEST_CASE("the child gets the signal mask and ignored signals the init inherited", "[pid1]") {
    std::vector<std::string> state{testkit(), "with-signals", "--block", "1,10,RTMIN+2", "--ignore", "12,13,22", "--"};
    auto direct = state, via_init = state;
    for (auto& a : inPidNamespace({testkit(), "sigstate"})) direct.push_back(a);
    for (auto& a : init({"--", testkit(), "sigstate"})) via_init.push_back(a);
    Child expected(direct), got(via_init);
    auto blk = expected.readLine(), ign = expected.readLine();
    REQUIRE(blk);
    CHECK(*blk != "SigBlk:\t0000000000000000"); // the set-up itself worked
    CHECK(got.readLine() == blk);
    CHECK(got.readLine() == ign);
    CHECK(got.wait() == 0);
}

TEST_CASE("the child starts with no file descriptor above 2", "[pid1]") {
    int fd7 = ::open("/dev/null", O_RDONLY), fd9 = ::open("/dev/null", O_WRONLY);
    Child c(init({"--", testkit(), "fds"}), {.keep_fds = {fd7, fd9}});
    CHECK(c.readLine() == "fds 0 1 2");
    CHECK(c.wait() == 0);
    Child control({testkit(), "fds"}, {.keep_fds = {fd7, fd9}}); // the descriptors did reach the init
    CHECK(control.readLine() != "fds 0 1 2");
    ::close(fd7);
    ::close(fd9);
}

TEST_CASE("the working directory is kept unless -w asks for another", "[pid1]") {
    Child kept({initBinary(), "--", "pwd"});
    char cwd[4096];
    REQUIRE(::getcwd(cwd, sizeof cwd));
    CHECK(kept.readLine() == std::string(cwd));
    Child root({initBinary(), "-w", "/", "--", "pwd"});
    CHECK(root.readLine() == "/");
    Child missing({initBinary(), "-w", "/no/such/dir", "--", "pwd"});
    CHECK(missing.wait() == 126);
}

TEST_CASE("the init's own lines go to stderr, never stdout, and as JSON with log.format json", "[pid1]") {
    Child text(init({"-v", "--", "true"}));
    CHECK(text.wait() == 0);
    CHECK(text.outputText().empty());
    CHECK_THAT(text.stderrText(), Catch::Contains("exiting with status 0"));

    Child json(init({"-v", "--", "sh", "-c", "exit 3"}), {.env = {"NIXPROC_INIT_LOG_FORMAT=json"}});
    CHECK(json.wait() == 3);
    CHECK(json.outputText().empty());
    std::istringstream lines(json.stderrText());
    int parsed = 0;
    for (std::string line; std::getline(lines, line); ++parsed) {
        INFO(line);
        auto event = YAML::Load(line); // JSON is YAML: one object per line
        CHECK(event["level"].as<std::string>().size() > 0);
        CHECK(event["time"].as<std::string>().ends_with("Z"));
        CHECK(event["msg"].as<std::string>().size() > 0);
    }
    CHECK(parsed >= 2);
    CHECK_THAT(json.stderrText(), Catch::Contains(R"j("msg":"exiting with status 3 (0 orphans reaped)")j"));
}

TEST_CASE("not PID 1: it registers as a subreaper and adopts orphans", "[subreaper]") {
    Child c({initBinary(), "--", testkit(), "orphan-parent"});
    CHECK(c.readLine() == "orphan-ppid " + std::to_string(c.pid()));
    CHECK(c.wait() == 0);
    // Control: without an init in between, the orphan goes to some other ancestor.
    Child bare({testkit(), "orphan-parent"});
    CHECK(bare.readLine() != "orphan-ppid " + std::to_string(bare.pid()));
}

TEST_CASE("job control works on a terminal: Ctrl-Z, fg, Ctrl-C in an interactive shell", "[pid1][tty]") {
    Child c(init({"--", "bash", "--norc", "--noprofile", "-i"}),
            {.pty = true, .env = {"PS1=prompt$ ", "TERM=dumb"}});
    REQUIRE(c.expect("prompt$ "));
    // The job answers a line only while it holds the terminal: each answer proves it is in front.
    c.send("bash -c 'while read -r l; do echo got:$l; done'\n");
    c.send("one\n");
    REQUIRE(c.expect("got:one"));
    c.send("\x1a"); // Ctrl-Z: SIGTSTP to the foreground group, which the shell gave to the job
    REQUIRE(c.expect("Stopped"));
    REQUIRE(c.expect("prompt$ "));
    c.send("fg\n");
    c.send("two\n");
    REQUIRE(c.expect("got:two"));
    c.send("\x03"); // Ctrl-C ends the job, not the shell and not the init
    REQUIRE(c.expect("prompt$ "));
    c.send("exit 7\n");
    CHECK(c.wait() == 7);
}

TEST_CASE("PID 1 on a terminal: Ctrl-Z does not leave a main child that is no shell stopped for good", "[pid1][tty]") {
    // docker run -it IMAGE CMD: above PID 1 there is no shell to `fg` the child, so a child stopped
    // by Ctrl-Z would hang the terminal and ignore Ctrl-C (the kernel spares orphaned groups so).
    Child c(init({"--", "bash", "-c", "while read -r l; do echo got:$l; done"}), {.pty = true, .env = {"TERM=dumb"}});
    c.send("one\n");
    REQUIRE(c.expect("got:one"));
    c.send("\x1a"); // Ctrl-Z: SIGTSTP to the foreground group, the child's
    c.send("two\n");
    CHECK(c.expect("got:two", 10s)); // it still reads the terminal
    c.send("\x03"); // Ctrl-C still ends it, and the init with it
    CHECK(c.wait(10s) == 128 + SIGINT);
}

TEST_CASE("a plain init is silent unless -v, and says once that it exits", "[pid1][log]") {
    Child quiet(init({"--", "sh", "-c", "exit 3"}));
    CHECK(quiet.wait() == 3);
    CHECK(quiet.stderrText() == "");

    Child stopped(init({"--", testkit(), "catch-all"})); // docker stop
    REQUIRE(stopped.readLine() == "ready");
    REQUIRE(::kill(namespaceInit(stopped.pid()), SIGTERM) == 0);
    CHECK(stopped.wait() == 128 + SIGTERM);
    CHECK(stopped.stderrText() == "");

    Child verbose(init({"-v", "--", "sh", "-c", "exit 3"}));
    CHECK(verbose.wait() == 3);
    CHECK(count(verbose.stderrText(), "main child (pid 2) exited with status 3") == 1);
    CHECK(count(verbose.stderrText(), "exiting with status 3") == 1);
}

TEST_CASE("the exit is logged once even when a SIGCHLD comes after the last child was reaped", "[pid1][log]") {
    // 300 leftovers die together of the SIGTERM the init sends them: one reaped in the drain
    // that empties the namespace leaves its SIGCHLD pending behind it.
    for (int run = 0; run < 20; ++run) {
        Child c(init({"-v", "--", "bash", "-c", "for i in $(seq 300); do sleep 1000 & done; exit 0"}));
        REQUIRE(c.wait() == 0);
        INFO("run " << run << "\n" << c.stderrText());
        REQUIRE(count(c.stderrText(), "exiting with status 0") == 1);
    }
}

TEST_CASE("not PID 1: a fault signal sent by a process reaches the child and the init stays to reap it", "[subreaper]") {
    for (int sig : {SIGSEGV, SIGABRT, SIGILL, SIGBUS, SIGFPE, SIGTRAP, SIGSYS}) {
        DYNAMIC_SECTION(nixproc::signalName(sig)) {
            Child c({initBinary(), "--", testkit(), "catch-all"});
            REQUIRE(c.readLine() == "ready");
            auto children = nixproc::childrenOf(c.pid());
            REQUIRE(children.size() == 1);
            KillAtEnd child{children.front()}; // an init killed by the signal would orphan it
            REQUIRE(::kill(c.pid(), sig) == 0);
            CHECK(c.readLine(10s) == "got " + std::to_string(sig));
            CHECK(c.wait() == 128 + sig); // the child's status, 128+N like the init's own death would be
            CHECK_FALSE(alive(child.pid));
        }
    }
}

TEST_CASE("not PID 1: Ctrl-Z stops the init with its child, fg resumes both, Ctrl-C ends them", "[subreaper][tty]") {
    // An interactive shell runs the init as a job; the init hands the terminal to its child.
    Child shell({"bash", "--norc", "--noprofile", "-i"}, {.pty = true, .env = {"PS1=prompt$ ", "TERM=dumb"}});
    REQUIRE(shell.expect("prompt$ "));
    shell.send(initBinary() + " -- bash -c 'while read -r l; do echo got:$l; done'\n");
    shell.send("one\n");
    REQUIRE(shell.expect("got:one"));
    auto inits = nixproc::childrenOf(shell.pid());
    REQUIRE(inits.size() == 1);
    auto children = nixproc::childrenOf(inits.front());
    REQUIRE(children.size() == 1);
    KillAtEnd init_process{inits.front()}, child_process{children.front()}; // a stuck test must not leave them stopped
    shell.send("\x1a"); // Ctrl-Z: SIGTSTP to the terminal's foreground group, the init's child
    REQUIRE(shell.expect("Stopped", 10s)); // the shell saw its job (the init) stop
    REQUIRE(shell.expect("prompt$ "));
    shell.send("fg\n");
    shell.send("two\n");
    REQUIRE(shell.expect("got:two", 10s));
    shell.send("\x1a"); // and a second time
    REQUIRE(shell.expect("Stopped", 10s));
    REQUIRE(shell.expect("prompt$ "));
    shell.send("fg\n");
    shell.send("three\n");
    REQUIRE(shell.expect("got:three", 10s));
    shell.send("\x03"); // Ctrl-C: SIGINT ends the child, the init exits 128+2
    REQUIRE(shell.expect("prompt$ ", 10s));
    shell.send("echo status:$?\n");
    REQUIRE(shell.expect("status:130"));
    shell.send("exit 0\n");
    CHECK(shell.wait() == 0);
}

TEST_CASE("the init leaves its start folder once the child runs, the child keeps it or gets -w", "[subreaper]") {
    std::string start = std::filesystem::current_path().string();
    TempDir elsewhere;
    for (bool with_w : {false, true}) {
        DYNAMIC_SECTION((with_w ? "with -w" : "without -w")) {
            std::vector<std::string> argv{initBinary()};
            if (with_w) argv.insert(argv.end(), {"-w", elsewhere.path});
            argv.insert(argv.end(), {"--", testkit(), "catch-all"});
            Child c(argv);
            REQUIRE(c.readLine() == "ready");
            auto children = nixproc::childrenOf(c.pid());
            REQUIRE(children.size() == 1);
            // The init moves right after starting the child, which may say "ready" first: no
            // event tells when, so look for a while.
            auto deadline = std::chrono::steady_clock::now() + 10s;
            while (cwdOf(c.pid()) != "/" && std::chrono::steady_clock::now() < deadline) ::usleep(10'000);
            CHECK(cwdOf(c.pid()) == "/");
            CHECK(cwdOf(children.front()) == (with_w ? elsewhere.path : start));
            REQUIRE(::kill(c.pid(), SIGTERM) == 0);
            CHECK(c.wait() == 128 + SIGTERM);
        }
    }
}
