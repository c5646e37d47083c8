// The demo end to end, as README walks through it: nixproc-init as PID 1 of a PID namespace, real
// Nix (nix-build, nix-env profiles), real supervisord and nginx, the demo's web app, and the kit's
// stand-in for nixproc-supervisord-switch (packaging/demo/).
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unistd.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

// Like `cp KIT MODEL`: the model's content is replaced, its mode stays (fs::copy_file would copy
// the kit file's mode, group-writable in a checkout made under umask 0002, which the init refuses).
void saveAs(const std::string& model, const std::string& from) {
    std::ifstream in(from, std::ios::binary);
    std::ofstream(model, std::ios::binary | std::ios::trunc) << in.rdbuf();
}

const std::string kKit = SOURCE_DIR "/packaging/demo";

std::string get(const std::string& host) {
    Child curl({"curl", "-s", "--max-time", "5", "-H", "Host: " + host, "http://127.0.0.1:8080/"});
    curl.wait();
    return curl.outputText();
}

bool answers(const std::string& host, int port) {
    return get(host).find("listening on port: " + std::to_string(port)) != std::string::npos;
}

// The supervisord program's pid, from supervisorctl.
std::string pidOf(const TempDir& t, const std::string& program) {
    Child ctl({"supervisorctl", "-c", t / "etc/supervisor/supervisord.conf", "pid", program});
    ctl.wait();
    return ctl.outputText();
}

struct Demo {
    TempDir t;
    std::vector<std::string> env;
    std::unique_ptr<Child> init;

    Demo() {
        Child setup({kKit + "/setup.sh", t.path, WEBAPP_BIN});
        REQUIRE(setup.wait() == 0);
        std::istringstream lines(readFile(t / "env"));
        for (std::string l; std::getline(lines, l);) env.push_back(l);
    }
    void start(std::vector<std::string> more_env = {}) {
        more_env.insert(more_env.begin(), env.begin(), env.end());
        init = std::make_unique<Child>(inPidNamespace({initBinary(), "-c", t / "etc/init.yaml"}), Options{.env = more_env});
    }
    void stop() {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait() == 0);
        CHECK(init->secondsToExit() > 0);
        CHECK_THAT(init->stderrText(), !Catch::Contains("SIGKILL"));
    }
    std::string model() const { return t / "etc/nixproc/processes.nix"; }

    // Deployment n ends: true when done, false at once when it failed, was refused, timed out or
    // was interrupted (the harness then prints the init's log).
    bool deployed(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 120s, deployFailures(n)); }
    bool deployFailed(int n) {
        std::string deploy = "deploy #" + std::to_string(n) + ": ";
        return init->expectLog(deploy + "failed", 60s, {deploy + "done", deploy + "refused", deploy + "timed out", deploy + "interrupted"});
    }

    // supervisorctl update does not wait for RUNNING: ask until the app answers, for 20 s at most.
    // If it never does, print why: the init's log and supervisord's.
    bool answersSoon(const std::string& host, int port) {
        auto deadline = std::chrono::steady_clock::now() + 20s;
        while (!answers(host, port)) {
            if (std::chrono::steady_clock::now() >= deadline) {
                std::cerr << "e2e: " << host << " did not answer on port " << port << " within 20 s\ne2e: the init's log:\n"
                          << init->stderrText() << "e2e: supervisord's log:\n" << readFile(t / "log/supervisord.log") << std::flush;
                return false;
            }
            ::usleep(20'000); // between two requests: there is no event to wait for
        }
        return true;
    }
};

} // namespace

TEST_CASE("webapp demo: boot, add webapp2 by editing processes.nix, a broken edit, restarts", "[e2e]") {
    Demo demo;
    demo.start();
    REQUIRE(demo.deployed(1));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #1: +nginx +webapp"));
    CHECK(answers("webapp.local", 5000));
    auto webapp_pid = pidOf(demo.t, "webapp");
    REQUIRE_FALSE(webapp_pid.empty());

    // The edit of README's walk-through: cp the version with webapp2 over the model.
    auto saved = std::chrono::steady_clock::now();
    saveAs(demo.model(), kKit + "/processes-with-webapp2.nix");
    REQUIRE(demo.deployed(2));
    REQUIRE(demo.answersSoon("webapp2.local", 5001));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - saved).count();
    std::printf("e2e: from the save that adds webapp2 to webapp2 answering: %.2f s\n", seconds);
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #2: +webapp2 ~nginx =webapp"));
    CHECK(pidOf(demo.t, "webapp") == webapp_pid); // untouched
    CHECK(answers("webapp.local", 5000));

    // A broken edit: reported, and nothing running changes.
    std::ofstream(demo.model(), std::ios::trunc) << "{ webapp = ; }\n";
    REQUIRE(demo.deployFailed(3));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #3 check | error: syntax error"));
    CHECK(answers("webapp.local", 5000));
    CHECK(answers("webapp2.local", 5001));

    // The fix deploys (the same instances: nothing to restart).
    std::string fixed = readFile(kKit + "/processes-with-webapp2.nix") + "# fixed\n";
    std::ofstream(demo.model(), std::ios::trunc) << fixed;
    REQUIRE(demo.deployed(4));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #4: =nginx =webapp =webapp2"));
    CHECK(pidOf(demo.t, "webapp") == webapp_pid);

    demo.stop();

    // Restart with the same state: nothing to deploy, the services come back.
    demo.start();
    REQUIRE(demo.init->expectLog("unchanged since deployment #4: nothing to deploy at boot", 60s, {"deploy #5: "}));
    CHECK(demo.answersSoon("webapp2.local", 5001));
    CHECK(answers("webapp.local", 5000));
    demo.stop();

    // Edited while stopped: deployed at start.
    saveAs(demo.model(), kKit + "/processes.nix");
    demo.start();
    REQUIRE(demo.deployed(5));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #5: at boot"));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("deploy #5: -webapp2 ~nginx =webapp"));
    CHECK(answers("webapp.local", 5000));
    CHECK_FALSE(answers("webapp2.local", 5001));
    demo.stop();
}

namespace {

// nixproc-initctl against the demo's init, its output and exit status.
struct Ctl {
    int status;
    std::string out, err;
};
Ctl initctl(const std::string& socket, std::vector<std::string> args) {
    args.insert(args.begin(), {NIXPROC_INITCTL_BIN, "--socket", socket});
    Child c(args);
    int status = c.wait(120s);
    return {status, c.outputText(), c.stderrText()};
}

} // namespace

TEST_CASE("webapp demo: a rollback after adding webapp2 takes it away again, and gc keeps the last generations", "[e2e]") {
    Demo demo;
    std::string socket = demo.t / "control.sock";
    // The store is the host's: only generations are deleted here, nix-collect-garbage is the
    // integration tests' (on a store of their own).
    std::ofstream(demo.t / "etc/init.yaml", std::ios::app) << "gc:\n  keep_generations: 2\n";
    demo.start({"NIXPROC_INIT_CONTROL_SOCKET=" + socket});
    REQUIRE(demo.deployed(1));
    REQUIRE(demo.init->expectLog("gc after deploy #1: done", 60s, {"gc after deploy #1: nix-env failed"}));
    CHECK_THAT(demo.init->stderrText(), Catch::Contains("gc after deploy #1: nix-env -p " + demo.t / "profiles/processes" + " --delete-generations +2"));
    saveAs(demo.model(), kKit + "/processes-with-webapp2.nix");
    REQUIRE(demo.deployed(2));
    REQUIRE(demo.answersSoon("webapp2.local", 5001));

    // The rollback, as an operator runs it: it waits for the deployment and says how it went.
    Ctl rollback = initctl(socket, {"rollback", "--wait"});
    CHECK(rollback.status == 0);
    CHECK_THAT(rollback.out, Catch::Contains("deploy #3: from generation 2 to 1") && Catch::Contains("deploy #3: -webapp2 ~nginx =webapp") &&
                                 Catch::Contains("deploy #3: done"));
    CHECK_FALSE(answers("webapp2.local", 5001));
    CHECK(answers("webapp.local", 5000));
    Ctl history = initctl(socket, {"history"});
    CHECK(history.status == 0);
    CHECK_THAT(history.out, Catch::Contains("rollback"));
    // Three generations made (the rollback is one), two kept.
    REQUIRE(demo.init->expectLog("gc after deploy #3: done", 60s, {"gc after deploy #3: nix-env failed"}));
    int links = 0;
    for (const auto& e : fs::directory_iterator(demo.t / "profiles"))
        if (e.path().filename().string().ends_with("-link")) ++links;
    CHECK(links == 2);

    // Ready: the model still has webapp2, but a rollback undid it on purpose.
    Ctl health = initctl(socket, {"health", "--ready"});
    CHECK(health.status == 0);
    demo.stop();
    // Not deployed again at boot either.
    demo.start({"NIXPROC_INIT_CONTROL_SOCKET=" + socket});
    REQUIRE(demo.init->expectLog("unchanged since a rollback undid its deployment", 60s, {"deploy #4: "}));
    CHECK(demo.answersSoon("webapp.local", 5000));
    CHECK_FALSE(answers("webapp2.local", 5001));
    demo.stop();
}
