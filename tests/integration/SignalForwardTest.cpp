// Signals sent to nixproc-init as PID 1 (docker kill -s SIG, a log rotator's USR1) reach the real
// manager only when it handles them: run as PID 1 itself, supervisord or s6-svscan would never
// have seen one it has no handler for (the kernel drops those for a namespace's init), and under
// the init it would die of it, taking the container down. And a COMMAND that replaces the
// manager's program is said at start; a shell that does not start the manager is a plain init.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>

using namespace harness;

namespace {

std::vector<std::string> init(std::vector<std::string> args) {
    args.insert(args.begin(), initBinary());
    return inPidNamespace(std::move(args));
}

std::string pathWithStandins() { return std::string("PATH=") + STANDINS_DIR + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; }

std::string supervisordConf(const TempDir& t) {
    return "[unix_http_server]\nfile=" + t / "supervisor.sock" + "\nchmod=0700\n\n"
           "[supervisord]\nlogfile=" + t / "supervisord.log" + "\npidfile=" + t / "supervisord.pid" + "\n\n"
           "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
           "[supervisorctl]\nserverurl=unix://" + t / "supervisor.sock" + "\n";
}

// No model: nothing is deployed, and nothing is written outside the test's folder.
std::string supervisordYaml(const TempDir& t, const std::string& extra = "") {
    return "processes: " + t / "nixproc/processes.nix" + "\nstate_dir: " + t / "state" + "\nprofile: " + t / "profile" +
           "\nprocess_manager: supervisord\nmanager:\n  config: " + t.write("supervisor/supervisord.conf", supervisordConf(t)) +
           "\n" + extra;
}

} // namespace

TEST_CASE("supervisord survives SIGUSR1 and SIGALRM sent to the init, which says once per signal that it kept them back",
          "[signals][supervisord]") {
    TempDir t;
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t))}));
    REQUIRE(c.expectLog("supervisord is ready"));
    pid_t pid1 = namespaceInit(c.pid());
    for (int round = 0; round < 2; ++round) {
        REQUIRE(::kill(pid1, SIGUSR1) == 0);
        REQUIRE(::kill(pid1, SIGALRM) == 0);
        // USR2 reopens supervisord's logs: its answer, after the two, shows it is still there.
        REQUIRE(::kill(pid1, SIGUSR2) == 0);
        REQUIRE(c.expect("received SIGUSR2 indicating log reopen request"));
    }
    CHECK(count(c.stderrText(), "SIGUSR1 not forwarded to supervisord: it has no handler for it and would die") == 1);
    CHECK(count(c.stderrText(), "SIGALRM not forwarded to supervisord: it has no handler for it and would die") == 1);
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait() == 0); // supervisord's own clean exit, not 128 + SIGUSR1
    CHECK_THAT(c.stderrText(), !Catch::Contains("killed by"));
}

TEST_CASE("s6-svscan survives SIGVTALRM sent to the init, and still gets the SIGUSR1 it handles", "[signals][s6]") {
    TempDir t;
    // No database anywhere: s6-svscan alone, waiting for a first deployment.
    auto yaml = t.write("init.yaml", "processes: " + t / "nixproc/processes.nix" + "\nprofile: " + t / "profile" +
                                         "\nprocess_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" + "\n");
    // s6-svscan runs .s6-svscan/SIGUSR1 on SIGUSR1 (doc/s6-svscan.html, "Signals").
    t.write("var/run/service/.s6-svscan/SIGUSR1", "#!/bin/sh\necho s6-svscan got SIGUSR1\n", 0755);
    Child c(init({"-c", yaml}), {.env = {pathWithStandins(), "NIXPROC_STANDIN_LOG=" + t / "calls"}});
    REQUIRE(c.expectLog("s6-rc: no database deployed"));
    REQUIRE(c.expectLog("s6-rc started"));
    pid_t pid1 = namespaceInit(c.pid());
    REQUIRE(::kill(pid1, SIGVTALRM) == 0);
    REQUIRE(::kill(pid1, SIGUSR1) == 0);
    REQUIRE(c.expect("s6-svscan got SIGUSR1"));
    CHECK(count(c.stderrText(), "SIGVTALRM not forwarded to s6-svscan: it has no handler for it and would die") == 1);
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait() == 0);
    CHECK_THAT(c.stderrText(), !Catch::Contains("killed by"));
}

TEST_CASE("a COMMAND that is not supervisord is said at start, and a manager that is not ready is never said to have started",
          "[signals][command]") {
    TempDir t;
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t, "  step_timeout_s: 1\n")), "--", "sleep", "600"}));
    REQUIRE(c.expectLog("COMMAND sleep replaces supervisord's command: nixproc-init still waits for " + t / "supervisor.sock" +
                        " and deploys; for a plain shell use --entrypoint or NIXPROC_INIT_PROCESS_MANAGER=none"));
    REQUIRE(c.expectLog("supervisord not ready after 1 s"));
    // The first deployment follows at once, in the same turn of the loop: by the time it speaks,
    // a "started" line would have been written.
    REQUIRE(c.expectLog("does not exist"));
    pid_t pid1 = namespaceInit(c.pid());
    REQUIRE(::kill(pid1, SIGUSR1) == 0); // sleep is the user's program: it gets every signal
    CHECK(c.wait() == 128 + SIGUSR1);
    CHECK_THAT(c.stderrText(), !Catch::Contains("supervisord started"));
    CHECK_THAT(c.stderrText(), !Catch::Contains("not forwarded"));
}

TEST_CASE("a shell as COMMAND instead of supervisord runs as a plain init: no wait for supervisord, no deployment",
          "[signals][command]") {
    TempDir t;
    // A second past the step timeout: long enough for "not ready" and a first deployment to show.
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t, "  step_timeout_s: 1\n")), "--", "sh", "-c",
                  "echo shell-ready; sleep 2; echo shell-done"}));
    REQUIRE(c.expectLog("COMMAND sh replaces supervisord's command and is a shell that does not start supervisord: "
                        "nixproc-init runs it as a plain init (no wait for " + t / "supervisor.sock" +
                        ", no deployments, every signal passed on)"));
    REQUIRE(c.expect("shell-done"));
    CHECK(c.wait() == 0);
    CHECK_THAT(c.stderrText(), !Catch::Contains("not ready") && !Catch::Contains("deploy #") && !Catch::Contains("started") &&
                                   !Catch::Contains("does not exist"));
    CHECK_FALSE(std::filesystem::exists(t / "state"));
}
