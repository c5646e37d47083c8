// Jobs and processes that do not end the ordinary way, through the real binary as PID 1: stopped
// (SIGSTOP) or deaf to SIGTERM at shutdown, not startable for lack of processes, killed by a
// SIGKILL nobody in the init sent (the OOM killer), and how each of these is told and recorded.
// Found by the container probe of issue #10 (findings 3, 6, 7, 11).
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace harness;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// The one-letter state of `pid` (R, S, T, Z...), '?' when it is gone.
char stateOf(pid_t pid) {
    std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

// No event tells that another process has stopped: looked at every 10 ms, for 10 s at most.
bool awaitStopped(pid_t pid) {
    for (auto end = Clock::now() + 10s; Clock::now() < end; std::this_thread::sleep_for(10ms))
        if (stateOf(pid) == 'T') return true;
    return false;
}

// The only child of `parent`, waited for while it is being started (10 s at most).
pid_t onlyChild(pid_t parent) {
    for (auto end = Clock::now() + 10s; Clock::now() < end; std::this_thread::sleep_for(10ms)) {
        auto children = nixproc::childrenOf(parent);
        if (children.size() == 1) return children.front();
    }
    return -1;
}

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A deploying init with the sysvinit manager (no main child: the init's only child is the job
// that runs) and a model that passes `true` as its check.
struct Deploying {
    TempDir t;
    std::string folder = t / "etc/nixproc";
    std::string state_dir = t / "state";
    std::unique_ptr<Child> init;

    Deploying() {
        fs::create_directories(folder);
        t.write("etc/nixproc/processes.nix", "{ webapp = \"1\"; }\n");
    }

    // `deploy` is the deploy section's keys, indented by two.
    std::string config(const std::string& deploy, const std::string& more = "") const {
        return t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + folder + "/processes.nix\nprofile: " + t / "profile" +
                                        "\nstate_dir: " + state_dir + "\ndeploy:\n" + deploy + more);
    }

    void start(const std::string& deploy, const std::string& more = "") {
        init = std::make_unique<Child>(inPidNamespace({initBinary(), "-c", config(deploy, more)}),
                                       Options{.env = {std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin"}});
    }

    pid_t pid1() const { return namespaceInit(init->pid()); }
    std::string state() const { return readFile(state_dir + "/state.yaml"); }
};

} // namespace

TEST_CASE("at shutdown a deployment job stopped by SIGSTOP gets SIGCONT with its SIGTERM, ends at once and is recorded as interrupted",
          "[shutdown][deploy]") {
    Deploying d;
    auto job = d.t.write("switch", "#!/bin/sh\necho stopping\nkill -STOP $$\necho continued without SIGTERM\nexec sleep 1000\n", 0755);
    d.start("  check: [true]\n  command: [" + job + "]\n", "shutdown:\n  grace_s: 5\n");
    REQUIRE(d.init->expectLog("deploy #1 | stopping"));
    pid_t pid1 = d.pid1();
    pid_t stopped = onlyChild(pid1);
    REQUIRE(stopped > 0);
    REQUIRE(awaitStopped(stopped));
    auto sent = Clock::now();
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(d.init->wait(20s) == 0);
    double took = since(sent);
    auto log = d.init->stderrText();
    INFO(log);
    CHECK(took < 3.0); // not the grace of 5 s
    CHECK_THAT(log, !Catch::Contains("grace of 5 s is over"));
    CHECK_THAT(log, !Catch::Contains("continued without SIGTERM"));
    CHECK_THAT(log, Catch::Contains("deploy #1: interrupted after"));
    CHECK_THAT(d.state(), Catch::Contains("outcome: interrupted"));
}

TEST_CASE("a deployment job that ignores SIGTERM is recorded, then logged, as interrupted before the init exits at the end of the grace",
          "[shutdown][deploy]") {
    for (int round = 1; round <= 3; ++round) {
        DYNAMIC_SECTION("round " << round) {
            Deploying d;
            d.start("  check: [true]\n  command: [" + testkit() + ", ignore-term]\n", "shutdown:\n  grace_s: 1\n");
            REQUIRE(d.init->expectLog("deploy #1 | ready"));
            REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
            CHECK(d.init->wait(20s) == 0);
            auto log = d.init->stderrText();
            INFO(log);
            CHECK_THAT(log, Catch::Contains("grace of 1 s is over: SIGKILL to everything left"));
            auto interrupted = log.find("deploy #1: interrupted after");
            REQUIRE(interrupted != std::string::npos);
            CHECK(interrupted < log.find("exiting with status"));
            CHECK_THAT(d.state(), Catch::Contains("outcome: interrupted"));
            CHECK_THAT(d.state(), !Catch::Contains("outcome: running"));
        }
    }
}

TEST_CASE("at shutdown a leftover process stopped by SIGSTOP gets SIGCONT with its SIGTERM and stops on it", "[shutdown][pid1]") {
    TempDir t;
    auto leftover = t.write("leftover", "#!/bin/sh\ntrap 'echo leftover got TERM; exit 0' TERM\necho leftover stopping\n"
                                        "kill -STOP $$\nwhile :; do sleep 0.1; done\n", 0755);
    Child c(inPidNamespace({initBinary(), "-t", "5", "--", "sh", "-c", leftover + " & exec sleep 1000"}));
    REQUIRE(c.expect("leftover stopping"));
    pid_t pid1 = namespaceInit(c.pid());
    pid_t main = onlyChild(pid1);
    REQUIRE(main > 0);
    pid_t stopped = onlyChild(main);
    REQUIRE(stopped > 0);
    REQUIRE(awaitStopped(stopped));
    auto sent = Clock::now();
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait(20s) == 128 + SIGTERM); // the main child's (sleep's) status
    INFO(c.stderrText());
    CHECK(since(sent) < 3.0);
    CHECK_THAT(c.outputText(), Catch::Contains("leftover got TERM"));
}

TEST_CASE("at shutdown a main child stopped by SIGSTOP gets SIGCONT after the SIGTERM passed on to it", "[shutdown][pid1]") {
    Child c(inPidNamespace({initBinary(), "-t", "5", "--", "sh", "-c",
                            "trap 'echo got TERM; exit 0' TERM; echo stopping; kill -STOP $$; while :; do sleep 0.1; done"}));
    REQUIRE(c.expect("stopping"));
    pid_t pid1 = namespaceInit(c.pid());
    pid_t main = onlyChild(pid1);
    REQUIRE(main > 0);
    REQUIRE(awaitStopped(main));
    auto sent = Clock::now();
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait(20s) == 0);
    INFO(c.stderrText());
    CHECK(since(sent) < 3.0);
    CHECK_THAT(c.outputText(), Catch::Contains("got TERM"));
}

// RLIMIT_NPROC as a pids limit (docker run --pids-limit): root is exempt from it, so the init runs
// as an otherwise unused uid, with a limit of 2 of which another process of that uid takes the
// second; ending that one frees the place (raising the running init's limit would need
// CAP_SYS_RESOURCE, which a test machine in a container may lack).
TEST_CASE("a check that cannot be started for lack of processes is reported as not started and tried again, not blamed on the model",
          "[deploy]") {
    const std::string uid = "64123";
    Deploying d;
    REQUIRE(::chmod(d.t.path.c_str(), 0755) == 0);
    fs::create_directories(d.state_dir);
    REQUIRE(::chown(d.state_dir.c_str(), 64123, 64123) == 0);
    REQUIRE(::chmod(d.state_dir.c_str(), 0700) == 0);
    auto yaml = d.config("  check: [true]\n  command: [true]\n  retries: 3\n  retry_backoff_s: 1\n");
    Child blocker({"setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--", "sh", "-c", "echo blocking; exec sleep 1000"});
    REQUIRE(blocker.readLine() == "blocking");
    // The init and the blocker are the two processes its uid may have: every fork fails with EAGAIN.
    d.init = std::make_unique<Child>(inPidNamespace({"setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups", "--",
                                                     "prlimit", "--nproc=2", "--", initBinary(), "-c", yaml}));
    const std::vector<std::string> model_failures{"failed after", "refused after", "timed out after", "gave up after"};
    REQUIRE(d.init->expectLog("deploy #1: interrupted after", 30s, model_failures));
    REQUIRE(d.init->expectLog("trying again in 1 s (1 of 3)"));
    auto log = d.init->stderrText();
    INFO(log);
    CHECK_THAT(log, Catch::Contains("could not start true: Resource temporarily unavailable"));
    CHECK_THAT(log, !Catch::Contains("true true"));
    CHECK_THAT(log, !Catch::Contains("does not pass deploy.check"));
    // A place is free: the next try deploys.
    REQUIRE(::kill(blocker.pid(), SIGKILL) == 0);
    CHECK(blocker.wait() == 128 + SIGKILL);
    REQUIRE(d.init->expectLog(": done in", 30s, model_failures));
    CHECK_THAT(d.state(), Catch::Contains("outcome: succeeded"));
    REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
    CHECK(d.init->wait() == 0);
}

TEST_CASE("a check that exits non-zero is reported with what is known, not as a fault of the model", "[deploy]") {
    Deploying d;
    d.start("  check: [sh, -c, 'echo error: Resource temporarily unavailable; exit 1']\n  command: [true]\n");
    REQUIRE(d.init->expectLog("deploy #1: failed"));
    auto log = d.init->stderrText();
    INFO(log);
    CHECK_THAT(log, Catch::Contains("deploy #1 check | error: Resource temporarily unavailable"));
    CHECK_THAT(log, Catch::Contains("deploy.check failed: sh exited with status 1 (its output above says why): not switching"));
    REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
    CHECK(d.init->wait() == 0);
}

TEST_CASE("deployment checks run with a raised oom_score_adj, the main child and a switch that starts services do not",
          "[deploy][oom]") {
    int own = std::stoi(readFile("/proc/self/oom_score_adj"));
    Deploying d;
    auto check_score = d.t / "check-score", switch_score = d.t / "switch-score";
    d.start("  check: [sh, -c, 'cat /proc/self/oom_score_adj > " + check_score + "']\n"
            "  command: [sh, -c, 'cat /proc/self/oom_score_adj > " + switch_score + "']\n");
    REQUIRE(d.init->expectLog("deploy #1: done", 30s, deployFailures(1)));
    CHECK(std::stoi(readFile(check_score)) == std::min(own + 500, 1000));
    // sysvinit's switch starts the services, which would inherit its score.
    CHECK(std::stoi(readFile(switch_score)) == own);
    REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
    CHECK(d.init->wait() == 0);

    Child plain(inPidNamespace({initBinary(), "--", "cat", "/proc/self/oom_score_adj"}));
    CHECK(plain.readLine() == std::to_string(own));
    CHECK(plain.wait() == 0);
}

TEST_CASE("a SIGKILL the init did not send names the OOM killer as a possible sender", "[oom]") {
    SECTION("a deployment's job") {
        Deploying d;
        d.start("  check: [true]\n  command: [" + testkit() + ", ignore-term]\n  retries: 0\n");
        REQUIRE(d.init->expectLog("deploy #1 | ready"));
        pid_t job = onlyChild(d.pid1());
        REQUIRE(job > 0);
        REQUIRE(::kill(job, SIGKILL) == 0);
        REQUIRE(d.init->expectLog("deploy #1: interrupted"));
        CHECK_THAT(d.init->stderrText(), Catch::Contains("killed by SIGKILL, which nixproc-init did not send (the OOM killer?)"));
        REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
        CHECK(d.init->wait() == 0);
    }
    SECTION("the main child") {
        Child c(inPidNamespace({initBinary(), "-v", "--", "sh", "-c", "echo ready; exec sleep 1000"}));
        REQUIRE(c.readLine() == "ready");
        pid_t main = onlyChild(namespaceInit(c.pid()));
        REQUIRE(main > 0);
        REQUIRE(::kill(main, SIGKILL) == 0);
        CHECK(c.wait() == 128 + SIGKILL);
        CHECK_THAT(c.stderrText(), Catch::Contains("main child (pid 2) killed by SIGKILL, which nixproc-init did not send (the OOM killer?)"));
    }
    SECTION("but not the SIGKILL of its own grace") {
        Deploying d;
        d.start("  check: [true]\n  command: [" + testkit() + ", ignore-term]\n", "shutdown:\n  grace_s: 1\n");
        REQUIRE(d.init->expectLog("deploy #1 | ready"));
        REQUIRE(::kill(d.pid1(), SIGTERM) == 0);
        CHECK(d.init->wait() == 0);
        CHECK_THAT(d.init->stderrText(), !Catch::Contains("OOM killer"));
    }
}

TEST_CASE("the plain init names neither a manager called none when its command cannot run nor when it starts", "[pid1]") {
    Child missing(inPidNamespace({initBinary(), "-v", "--", "no-such-command-here"}));
    CHECK(missing.wait() == 127);
    CHECK_THAT(missing.stderrText(), Catch::Contains("cannot run no-such-command-here: No such file or directory"));
    CHECK_THAT(missing.stderrText(), !Catch::Contains("none"));

    Child started(inPidNamespace({initBinary(), "-v", "--", "true"}));
    CHECK(started.wait() == 0);
    CHECK_THAT(started.stderrText(), Catch::Contains("started main child (pid 2): true"));
    CHECK_THAT(started.stderrText(), !Catch::Contains("none"));
}
