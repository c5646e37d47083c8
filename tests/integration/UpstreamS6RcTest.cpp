// nixproc-init as PID 1 with s6-rc laid out as nix-processmgmt lays it out: the profile holds
// etc/s6/sv only, nixproc-s6-rc-switch compiles it into STATE/etc/s6/rc/compiled-HASH with a
// `compiled` link, the live state is RUNTIME/s6-rc and the scan folder RUNTIME/service
// (tools/s6-rc/nixproc-s6-rc-deploy.in:298-337, s6-rc-checks). The real s6-svscan and s6-svc
// (Debian's s6) run the services; s6-rc, s6-rc-init, s6-rc-compile, s6-rc-update and the switch
// are the stand-ins of tests/standins/, written from the upstream sources.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>

using namespace harness;
namespace fs = std::filesystem;

namespace {

struct UpstreamS6Rc {
    TempDir t;
    std::string model = t / "etc/nixproc/processes.nix";
    std::string state = t / "var", runtime = t / "run";
    std::string scan = runtime + "/service", live = runtime + "/s6-rc";
    std::string compiled = state + "/etc/s6/rc/compiled";
    std::string profile = t / "profiles/processes";
    double grace_s = 8;
    std::unique_ptr<Child> init;

    explicit UpstreamS6Rc(const std::string& processes) {
        save(processes);
        fs::create_directories(t / "profiles");
    }

    void save(const std::string& processes) const { t.write("etc/nixproc/processes.nix", processes); }

    // The upstream-shaped configuration: default deploy command (nixproc-s6-rc-switch), the
    // state and runtime folders the switch is told with --state-dir and --runtime-dir.
    void boot() {
        auto yaml = t.write("init.yaml", "process_manager: s6-rc\nprocesses: " + model + "\nprofile: " + profile +
                                             "\nstate_dir: " + t / "init-state" + "\nnixproc:\n  state_dir: " + state +
                                             "\n  runtime_dir: " + runtime + "\nbootstrap: {channel: \"\"}\n"
                                             "watch:\n  debounce_ms: 100\nshutdown:\n  grace_s: 8\n");
        init = std::make_unique<Child>(inPidNamespace({initBinary(), "-c", yaml}),
                                       Options{.env = {std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin",
                                                       "NIXPROC_STANDIN_LOG=" + t / "calls"}});
    }

    bool deployed(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }

    // docker stop: SIGTERM, exit 0 within the grace, without SIGKILL.
    void stop() {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait(20s) == 0);
        CHECK(init->secondsToExit() < grace_s);
        CHECK_THAT(init->stderrText(), !Catch::Contains("SIGKILL"));
        CHECK_THAT(init->stderrText(), !Catch::Contains("AddressSanitizer") && !Catch::Contains("runtime error:"));
    }

    // What the real s6-svstat says of a service in the scan folder: "true" when it is up.
    std::string up(const std::string& service) const {
        Child svstat({"s6-svstat", "-o", "up", scan + "/" + service});
        svstat.wait();
        auto out = svstat.outputText();
        return out.substr(0, out.find('\n'));
    }

    // compiled-<the first 32 characters of the profile's store path name> (deploy.in:314-316).
    std::string databaseOfProfile() const {
        return state + "/etc/s6/rc/compiled-" + fs::canonical(profile).filename().string().substr(0, 32);
    }
};

std::string liveTarget(const std::string& live) {
    std::error_code ec;
    return fs::read_symlink(live, ec).string();
}

} // namespace

TEST_CASE("s6-rc on the upstream layout: deploys into the state folder's database, shows the plan by process, "
          "comes back on the same folders after a restart and stops within the grace", "[upstream][s6]") {
    UpstreamS6Rc c("{\n  a = \"1\";\n  b = \"1\";\n}\n");
    c.boot();
    REQUIRE(c.init->expectLog("s6-rc started"));
    REQUIRE(c.deployed(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #1: +a +b\n"));
    for (auto s : {"a-srv", "a-log", "b-srv", "b-log"}) CHECK(c.up(s) == "true");
    // The database lives in the state folder, named after the profile; the live state points at it.
    REQUIRE(fs::exists(c.profile));
    auto db1 = c.databaseOfProfile();
    CHECK(fs::read_symlink(c.compiled).string() == db1);
    CHECK(fs::canonical(c.live + "/compiled").string() == db1);
    CHECK_THAT(liveTarget(c.live), Catch::StartsWith("s6-rc:s6-rc-init:"));
    CHECK_FALSE(fs::exists(c.profile + "/etc/s6/rc"));

    c.save("{\n  a = \"2\";\n}\n");
    REQUIRE(c.deployed(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: -b ~a\n"));
    auto db2 = c.databaseOfProfile();
    CHECK(db2 != db1);
    CHECK(fs::read_symlink(c.compiled).string() == db2);
    CHECK_FALSE(fs::exists(db1)); // s6-rc-update replaced it, the switch deleted it (deploy.in:329-330)
    CHECK(c.up("a-srv") == "true");
    CHECK_FALSE(fs::exists(fs::symlink_status(c.scan + "/b-srv")));
    c.stop();
    CHECK_THAT(readFile(c.t / "calls"), Catch::EndsWith("s6-rc -l " + c.live + " -bDa change\n"));

    // The same folders again, as Docker keeps /run: the live state and the scan folder's links
    // are the previous run's.
    auto stale = liveTarget(c.live);
    REQUIRE(fs::is_symlink(c.scan + "/a-srv"));
    c.boot();
    REQUIRE(c.init->expectLog("s6-rc started", 30s, {"s6-rc-init:", "s6-rc did not start"}));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("s6-rc: cleared what a previous run left"));
    CHECK_THAT(readFile(c.t / "calls"), Catch::EndsWith("s6-rc-init -c " + db2 + " -l " + c.live + " " + c.scan +
                                                        "\ns6-rc -l " + c.live + " -u change default\n"));
    CHECK(liveTarget(c.live) != stale);
    CHECK_FALSE(fs::exists(c.runtime + "/" + stale));
    CHECK(c.up("a-srv") == "true");
    CHECK(c.up("a-log") == "true");
    c.stop();
}

TEST_CASE("s6-rc after an init killed outright: the restart clears the old scan links and live state before "
          "s6-svscan starts, and s6-rc brings the services back itself", "[upstream][s6]") {
    UpstreamS6Rc c("{\n  a = \"1\";\n}\n");
    c.boot();
    REQUIRE(c.deployed(1));
    REQUIRE(c.up("a-srv") == "true");
    auto stale = liveTarget(c.live);
    // docker kill: no stop step ran, so the old live copies have no ./down file and s6-svscan
    // would start them from the old links, outside s6-rc.
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGKILL) == 0);
    c.init->wait();
    REQUIRE(fs::is_symlink(c.scan + "/a-srv"));
    REQUIRE_FALSE(fs::exists(c.live + "/servicedirs/a-srv/down"));

    c.boot();
    REQUIRE(c.init->expectLog("s6-rc started", 30s, {"s6-rc-init:", "s6-rc did not start"}));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("s6-rc: cleared what a previous run left"));
    CHECK(liveTarget(c.live) != stale);
    CHECK_FALSE(fs::exists(c.runtime + "/" + stale));
    // Every supervised service is the new live state's, and s6-rc knows it is up.
    for (auto s : {"a-srv", "a-log"}) {
        CHECK(fs::read_symlink(c.scan + "/" + s).string() == c.live + "/servicedirs/" + s);
        CHECK(c.up(s) == "true");
    }
    Child list({"s6-rc", "-l", c.live, "-a", "list"}, {.env = {std::string("PATH=") + STANDINS_DIR + ":/usr/bin:/bin"}});
    CHECK(list.wait() == 0);
    CHECK(list.outputText() == "a-log\na-srv\n");
    c.stop();
}
