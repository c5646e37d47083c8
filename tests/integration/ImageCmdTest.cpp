// nixproc-init made the Entrypoint of a nix-processmgmt image: the image's Cmd becomes its
// COMMAND. The Cmds that do the init's own work (tests/fixtures/upstream/image-cmd/, shaped as
// upstream writes them) are refused before anything runs, with what to do; supervisord's is not.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace harness;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(SOURCE_DIR) + "/tests/fixtures/upstream/image-cmd";

// A fixture copied to `name` in the test's folder, runnable here: its /nix/store shell becomes
// Debian's, so that before the refusal existed the init would really have run it.
std::string runnableCopy(const TempDir& t, const std::string& fixture, const std::string& name) {
    std::ifstream in(kFixtures + "/" + fixture);
    std::ostringstream text;
    std::string first;
    std::getline(in, first);
    text << (first.find("/bin/bash") != std::string::npos ? "#! /bin/bash -e" : first) << "\n" << in.rdbuf();
    return t.write(name, text.str(), 0755);
}

// Stand-ins for what upstream's scripts call, recording that they ran.
std::vector<std::string> recordingEnvironment(const TempDir& t) {
    for (const char* tool : {"nix-channel", "nixproc-sysvinit-switch", "nixproc-supervisord-switch", "nixproc-sysvinit-runactivity"})
        t.write(std::string("stubs/") + tool, "#!/bin/sh\necho \"" + std::string(tool) + " $*\" >> " + t / "ran" + "\n", 0755);
    return {"PATH=" + t / "stubs" + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + t / "home"};
}

std::string config(const TempDir& t, const std::string& manager) {
    return t.write("init.yaml", "process_manager: " + manager + "\nprocesses: " + t / "etc/nixproc/processes.nix" +
                                    "\nprofile: " + t / "profiles/processes" + "\nstate_dir: " + t / "state" +
                                    "\nbootstrap: {channel: \"\"}\n");
}

} // namespace

TEST_CASE("the image's /bin/bootstrap as COMMAND is refused before anything runs, saying what to do", "[upstream][image]") {
    for (const std::string manager : {"sysvinit", "supervisord"}) {
        DYNAMIC_SECTION(manager) {
            TempDir t;
            auto env = recordingEnvironment(t);
            auto bootstrap = runnableCopy(t, manager + "/bin/bootstrap", "bin/bootstrap");
            Child init(inPidNamespace({initBinary(), "-c", config(t, manager), "--", bootstrap}), {.env = env});
            CHECK(init.wait() == 2);
            CHECK_THAT(init.stderrText(),
                       Catch::Contains("the command " + bootstrap + " is nix-processmgmt's bootstrap script for " +
                                       manager + " (nixproc/create-image-from-steps/steps/bootstrap-init.nix): it adds and "
                                       "updates a Nix channel, starts nixproc-" + manager + "-switch in the background") &&
                           Catch::Contains("Not starting anything. Build the image with `bootstrap = false` and its Cmd set to []"));
            CHECK_THAT(init.stderrText(), !Catch::Contains("started"));
            CHECK_FALSE(fs::exists(t / "ran")); // no channel, no second switch
            CHECK_FALSE(fs::exists(t / "state"));
        }
    }
}

TEST_CASE("the sysvinit compound proxy and s6-linux-init's /bin/init as COMMAND are refused, --check-config too", "[upstream][image]") {
    struct Case {
        std::string manager, fixture, says;
    };
    for (const auto& c : std::vector<Case>{
             {"sysvinit", "sysvinit/nix/store/b23i9i27rga2p5n7pwdrc1qm0v7dfwil-compound-proxy-script",
              "compound proxy script for sysvinit (nixproc/backends/util/generate-compound-proxy.nix, the Cmd of "
              "nixproc/backends/sysvinit/image-steps/sysvinit-dynamic.nix): it runs nixproc-sysvinit-runactivity start"},
             {"s6-rc", "s6-rc/bin/init", "s6-linux-init's stage 1 (written by s6-linux-init-maker in "
                                         "nixproc/backends/s6-rc/image-steps/s6-rc.nix): it must run as PID 1"},
         }) {
        DYNAMIC_SECTION(c.manager) {
            TempDir t;
            auto env = recordingEnvironment(t);
            auto command = runnableCopy(t, c.fixture, c.manager == "s6-rc" ? "bin/init" : "store/x-compound-proxy-script");
            Child init(inPidNamespace({initBinary(), "-c", config(t, c.manager), "--", command}), {.env = env});
            CHECK(init.wait() == 2);
            CHECK_THAT(init.stderrText(), Catch::Contains(c.says) && Catch::Contains("`bootstrap = false`"));
            CHECK_FALSE(fs::exists(t / "ran"));

            Child check({initBinary(), "--check-config", "-c", config(t, c.manager), "--", command}, {.env = env});
            CHECK(check.wait() == 2);
            CHECK_THAT(check.stderrText(), Catch::Contains(c.says));
            CHECK(check.outputText().empty());
        }
    }
}

TEST_CASE("supervisord's upstream Cmd as COMMAND is accepted", "[upstream][image]") {
    TempDir t;
    // supervisord.nix:6, and the wrapper nixpkgs makes of supervisord's bin/supervisord.
    for (std::vector<std::string> command :
         {std::vector<std::string>{"supervisord", "--nodaemon", "--configuration", "/etc/supervisor/supervisord.conf", "--logfile",
                                   "/var/log/supervisord.log", "--pidfile", "/var/run/supervisord.pid"},
          std::vector<std::string>{kFixtures + "/supervisord/nix/store/w8cf673745p61xcp5g0hc0wh16s3hylf-python3.10-supervisor-4.2.5/bin/supervisord",
                                   "--nodaemon"},
          std::vector<std::string>{kFixtures + "/supervisord-restarted/bin/bootstrap"}}) {
        std::vector<std::string> argv{initBinary(), "--check-config", "-c", config(t, "supervisord"), "--"};
        argv.insert(argv.end(), command.begin(), command.end());
        Child check(argv);
        CHECK(check.wait() == 0);
        CHECK_THAT(check.outputText(), Catch::Contains(command.front()));
        CHECK_THAT(check.stderrText(), !Catch::Contains("nix-processmgmt's"));
    }
}
