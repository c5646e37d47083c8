// nixproc-init as PID 1 with sysvinit laid out as nix-processmgmt lays it out (0e9ec77): the
// profile is a generation link to a buildEnv of per-process packages, whose
// etc/rc.d/rcN.d/S<NN>NAME lead to init.d scripts in the store
// (nixproc/backends/sysvinit/create-sysvinit-script.nix:270-289, build-sysvinit-env.nix); the
// switch (the stand-in of tests/standins/, written from tools/sysvinit/nixproc-sysvinit-deploy.in)
// is told the profile by -p/NIX_USER_PROFILE_DIR and the runlevel by --runlevel, stops what the
// old generation ran and the new one does not, starts what is new, and sets the profile last.
// The rc scripts daemonize a real process with Debian's start-stop-daemon and write a pidfile.
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

using namespace harness;
namespace fs = std::filesystem;

namespace {

// An init.d script as create-sysvinit-script.nix writes one (LSB header, one case branch per
// activity), for the stand-in's build to fill in (@name@, @version@).
std::string initdTemplate(const TempDir& t) {
    return "#!/bin/sh\n\n## BEGIN INIT INFO\n# Provides:      @name@\n# Description:   @name@ version @version@\n## END INIT INFO\n\n"
           "case \"$1\" in\n"
           "  start)\n"
           "    echo \"start @name@ @version@\" >> " + t / "events" + "\n"
           "    start-stop-daemon --start --background --make-pidfile --pidfile " + t / "pids/@name@.pid" +
           " --exec /usr/bin/sleep -- 100000\n"
           "    ;;\n"
           "  stop)\n"
           "    echo \"stop @name@ @version@\" >> " + t / "events" + "\n"
           "    start-stop-daemon --stop --pidfile " + t / "pids/@name@.pid" + " --retry TERM/5/KILL/5 --remove-pidfile\n"
           "    ;;\n"
           "esac\n";
}

struct UpstreamSysvinit {
    TempDir t;
    std::string model = t / "etc/nixproc/processes.nix";
    std::string profile = t / "profiles/processes";
    int runlevel;
    std::vector<std::string> env;
    std::unique_ptr<Child> init;

    explicit UpstreamSysvinit(const std::string& processes, int level = 3, std::vector<std::string> extra_env = {})
        : runlevel(level), env(std::move(extra_env)) {
        save(processes);
        fs::create_directories(t / "profiles");
        fs::create_directories(t / "pids");
        env.push_back(std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin");
        env.push_back("NIXPROC_STANDIN_INITD=" + t.write("initd.in", initdTemplate(t)));
    }

    void save(const std::string& processes) const { t.write("etc/nixproc/processes.nix", processes); }

    // The upstream-shaped configuration: the default deploy command (nixproc-sysvinit-switch),
    // the profile `processes` in its own folder, the state folders told with --state-dir.
    void boot() {
        auto yaml = t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + model + "\nprofile: " + profile +
                                             "\nstate_dir: " + t / "init-state" + "\nnixproc:\n  state_dir: " + t / "var" +
                                             "\nmanager:\n  runlevel: " + std::to_string(runlevel) +
                                             "\nbootstrap: {channel: \"\"}\nwatch:\n  debounce_ms: 100\nshutdown:\n  grace_s: 8\n");
        init = std::make_unique<Child>(inPidNamespace({initBinary(), "-c", yaml}), Options{.env = env});
    }

    bool deployed(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }

    // docker stop: SIGTERM, exit 0 within the grace, without SIGKILL.
    void stop() {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait(20s) == 0);
        CHECK(init->secondsToExit() < 8);
        CHECK_THAT(init->stderrText(), !Catch::Contains("SIGKILL"));
    }

    std::string events() const { return fs::exists(t / "events") ? readFile(t / "events") : ""; }

    // The pid a daemon's pidfile holds (as seen in the init's namespace), 0 when there is none.
    pid_t pidOf(const std::string& name) const {
        std::ifstream in(t / "pids/" + name + ".pid");
        pid_t pid = 0;
        in >> pid;
        return pid;
    }

    // The pids, as seen in the init's namespace, of the processes the init adopted (NSpid's last).
    std::set<pid_t> adopted() const {
        std::set<pid_t> out;
        for (pid_t child : nixproc::childrenOf(namespaceInit(init->pid()))) {
            std::istringstream status(readFile("/proc/" + std::to_string(child) + "/status"));
            for (std::string line; std::getline(status, line);)
                if (line.starts_with("NSpid:")) out.insert(std::stoi(line.substr(line.find_last_of(" \t") + 1)));
        }
        return out;
    }
};

} // namespace

TEST_CASE("sysvinit on the upstream layout: the switch starts and stops the daemons by plan, a restart runs the "
          "profile's rc scripts, stop runs them in reverse", "[upstream][sysvinit]") {
    UpstreamSysvinit c("{\n  a = \"1\";\n  b = \"1\";\n}\n");
    c.boot();
    REQUIRE(c.deployed(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #1: +a +b"));
    CHECK(c.events() == "start a 1\nstart b 1\n");
    // The switch set the profile the upstream way: a generation link to the built store path.
    CHECK(fs::read_symlink(c.profile) == "processes-1-link");
    CHECK(fs::is_symlink(c.profile + "/etc/rc.d/rc3.d/S00a"));
    CHECK(fs::is_symlink(c.profile + "/etc/rc.d/rc3.d/S01b"));
    pid_t a1 = c.pidOf("a"), b1 = c.pidOf("b");
    REQUIRE(a1 > 0);
    REQUIRE(b1 > 0);
    CHECK(c.adopted() == std::set<pid_t>{a1, b1});

    // docker restart: the stop steps run the rc scripts in reverse, the start steps run them again.
    c.stop();
    CHECK(c.events() == "start a 1\nstart b 1\nstop b 1\nstop a 1\n");
    c.boot();
    REQUIRE(c.init->expectLog("sysvinit started"));
    REQUIRE(c.init->expectLog("processes.nix unchanged since deployment #1: nothing to deploy at boot"));
    CHECK(c.events() == "start a 1\nstart b 1\nstop b 1\nstop a 1\nstart a 1\nstart b 1\n");
    a1 = c.pidOf("a");
    b1 = c.pidOf("b");
    CHECK(c.adopted() == std::set<pid_t>{a1, b1});

    // a changes, b goes: the switch stops both old scripts (readlink -f differs for a) in
    // reverse, starts the new a, then sets the profile.
    c.save("{\n  a = \"2\";\n}\n");
    REQUIRE(c.deployed(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: -b ~a"));
    CHECK(c.events() == "start a 1\nstart b 1\nstop b 1\nstop a 1\nstart a 1\nstart b 1\nstop b 1\nstop a 1\nstart a 2\n");
    CHECK_FALSE(fs::exists(c.t / "pids/b.pid"));
    pid_t a2 = c.pidOf("a");
    CHECK(a2 != a1);
    CHECK(c.adopted() == std::set<pid_t>{a2}); // b's daemon and the old a are gone
    CHECK(fs::read_symlink(c.profile) == "processes-2-link");

    c.stop();
    CHECK_THAT(c.events(), Catch::EndsWith("start a 2\nstop a 2\n"));
    CHECK_FALSE(fs::exists(c.t / "pids/a.pid"));
}

TEST_CASE("sysvinit's manager.runlevel reaches the switch: it deploys the rc folder the init starts and stops",
          "[upstream][sysvinit]") {
    // The processes start in runlevel 4 only (K scripts elsewhere); without --runlevel the switch
    // asks `runlevel`, which knows none in a container, and deploys runlevel 3.
    UpstreamSysvinit c("{\n  a = \"1\";\n  b = \"1\";\n}\n", 4, {"NIXPROC_STANDIN_RUNLEVELS=4"});
    c.boot();
    REQUIRE(c.deployed(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #1: +a +b"));
    CHECK(fs::is_symlink(c.profile + "/etc/rc.d/rc4.d/S00a"));
    CHECK(fs::is_symlink(c.profile + "/etc/rc.d/rc3.d/K99a"));
    CHECK(c.events() == "start a 1\nstart b 1\n");
    CHECK(c.adopted() == std::set<pid_t>{c.pidOf("a"), c.pidOf("b")});

    c.save("{\n  b = \"1\";\n}\n");
    REQUIRE(c.deployed(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: -a =b"));
    CHECK(c.events() == "start a 1\nstart b 1\nstop a 1\n");
    c.stop();
    CHECK(c.events() == "start a 1\nstart b 1\nstop a 1\nstop b 1\n");
}
