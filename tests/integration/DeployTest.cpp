// The deployment engine with real inotify, real nix-instantiate --parse, and a stand-in for
// nixproc-sysvinit-switch that records what it deployed (tests/standins/).
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

std::string model(const std::string& version) {
    return "{\n  webapp = \"" + version + "\";\n  nginx = \"1\";\n}\n";
}
std::string recorded(const std::string& version) { // the stand-in's one-line record of a model
    std::string m = model(version);
    for (char& c : m)
        if (c == '\n') c = ' ';
    return m;
}

struct Container {
    TempDir t;
    std::string folder = t / "etc/nixproc";
    std::string path = folder + "/processes.nix";
    std::unique_ptr<Child> init;
    int debounce_ms = 100; // short, so the tests run fast; the storm test uses the default
    std::string state_dir = t / "state";
    std::string switch_command = "[nixproc-sysvinit-switch, --profile, " + t / "profile" + "]";
    std::string deploy_extra; // more keys of the deploy section

    Container() {
        fs::create_directories(folder);
        save(model("1"));
    }

    void save(const std::string& text) const { std::ofstream(path, std::ios::trunc) << text; }

    std::vector<std::string> records() const {
        std::vector<std::string> lines;
        std::istringstream in(readFile(t / "deployed"));
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        return lines;
    }

    void start(const std::string& extra_yaml = "", std::vector<std::string> env = {}) {
        auto yaml = t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + path + "\nprofile: " + t / "profile" +
                                             "\nstate_dir: " + state_dir + "\nwatch:\n  debounce_ms: " + std::to_string(debounce_ms) +
                                             "\ndeploy:\n  command: " + switch_command + "\n" + deploy_extra + extra_yaml);
        env.push_back(std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin");
        env.push_back("NIXPROC_STANDIN_LOG=" + t / "deployed");
        std::vector<std::string> argv = inPidNamespace({initBinary(), "-c", yaml});
        init = std::make_unique<Child>(argv, Options{.env = env});
    }

    bool done(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s); }

    // A save after everything else: if it becomes deployment n, nothing else was deployed between.
    void sentinel(int n) {
        save(model("sentinel" + std::to_string(n)));
        REQUIRE(done(n));
        CHECK(records().back() == recorded("sentinel" + std::to_string(n)));
        CHECK(records().size() == static_cast<size_t>(n));
    }
};

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

} // namespace

TEST_CASE("first boot deploys, and every save style gives exactly one deployment of the final content", "[deploy]") {
    using Style = std::function<void(Container&, const std::string&)>;
    std::vector<std::pair<std::string, Style>> styles{
        {"truncate and write in place (mcedit)", [](Container& c, const std::string& text) { c.save(text); }},
        {"temp file renamed over (sed -i)",
         [](Container& c, const std::string&) {
             Child sed({"sed", "-i", "s/webapp = \"1\"/webapp = \"2\"/", c.path});
             REQUIRE(sed.wait() == 0);
         }},
        {"old file renamed away, new one written (vim)",
         [](Container& c, const std::string& text) {
             writeFile(c.folder + "/.processes.nix.swp", "swap");
             fs::rename(c.path, c.path + "~");
             writeFile(c.folder + "/4913", "");
             fs::remove(c.folder + "/4913");
             writeFile(c.path, text);
             fs::remove(c.path + "~");
             fs::remove(c.folder + "/.processes.nix.swp");
         }},
        {"deleted and created", [](Container& c, const std::string& text) { fs::remove(c.path); writeFile(c.path, text); }},
        {"cp over it",
         [](Container& c, const std::string& text) {
             writeFile(c.t / "new.nix", text);
             Child cp({"cp", c.t / "new.nix", c.path});
             REQUIRE(cp.wait() == 0);
         }},
        {"the folder removed and created again",
         [](Container& c, const std::string& text) {
             fs::remove_all(c.folder);
             fs::create_directories(c.folder);
             writeFile(c.path, text);
         }},
    };
    for (auto& [name, style] : styles) {
        DYNAMIC_SECTION(name) {
            Container c;
            c.start();
            REQUIRE(c.done(1));
            CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #1: first deployment"));
            CHECK(c.records() == std::vector<std::string>{recorded("1")});
            style(c, model("2"));
            REQUIRE(c.done(2));
            CHECK(c.records().back() == recorded("2"));
            CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: processes.nix changed"));
            CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2 | switched to generation 2"));
            CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: ~webapp =nginx"));
            c.sentinel(3);
        }
    }
}

TEST_CASE("a Kubernetes ConfigMap update (..data symlink swap) deploys once", "[deploy]") {
    Container c;
    fs::remove(c.path);
    fs::create_directories(c.folder + "/..2026_11_26_1");
    writeFile(c.folder + "/..2026_11_26_1/processes.nix", model("1"));
    fs::create_directory_symlink("..2026_11_26_1", c.folder + "/..data");
    fs::create_symlink("..data/processes.nix", c.path);
    c.start();
    REQUIRE(c.done(1));
    fs::create_directories(c.folder + "/..2026_11_26_2");
    writeFile(c.folder + "/..2026_11_26_2/processes.nix", model("2"));
    fs::create_directory_symlink("..2026_11_26_2", c.folder + "/..data_tmp");
    fs::rename(c.folder + "/..data_tmp", c.folder + "/..data");
    fs::remove_all(c.folder + "/..2026_11_26_1");
    REQUIRE(c.done(2));
    CHECK(c.records() == std::vector<std::string>{recorded("1"), recorded("2")});
}

TEST_CASE("100 saves within a second give at most 2 deployments, the last of the final content", "[deploy]") {
    Container c;
    c.debounce_ms = 250;
    c.start();
    REQUIRE(c.done(1));
    int unparsable = 0, reads = 0;
    for (int i = 0; i < 100; ++i) {
        c.save(model("storm" + std::to_string(i)));
        // The state file is replaced while deployments run: it must always parse.
        if (fs::exists(c.t / "state/state.yaml")) {
            ++reads;
            try {
                YAML::LoadFile(c.t / "state/state.yaml")["deployments"].size();
            } catch (const YAML::Exception&) {
                ++unparsable;
            }
        }
        ::usleep(10'000); // the saves themselves, spread over a second: the workload, not a wait
    }
    int last = 1;
    for (int n = 2; n <= 4 && c.done(n); ++n) {
        last = n;
        if (c.records().back() == recorded("storm99")) break;
    }
    CHECK(c.records().back() == recorded("storm99"));
    CHECK(last - 1 <= 2);
    CHECK(reads > 0);
    CHECK(unparsable == 0);
    c.sentinel(last + 1);
}

TEST_CASE("a save that leaves the model as deployed does nothing", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    c.save(model("1"));
    REQUIRE(c.init->expectLog("processes.nix saved, unchanged since deployment #1: nothing to do"));
    c.sentinel(2);
}

TEST_CASE("a model with a syntax error never reaches the switch, and the next good save deploys", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    c.save("{ webapp = ; }\n");
    REQUIRE(c.init->expectLog("deploy #2: failed"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2 check | error: syntax error, unexpected ';'"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("the model does not pass deploy.check"));
    CHECK(c.records().size() == 1);
    c.save(model("fixed"));
    REQUIRE(c.done(3));
    CHECK(c.records() == std::vector<std::string>{recorded("1"), recorded("fixed")});
}

TEST_CASE("kill -9 of the init during a deployment: the next start deploys again", "[deploy]") {
    Container c;
    Fifo gate(c.t / "gate");
    c.start("", {"NIXPROC_STANDIN_GATE=" + c.t / "gate"});
    REQUIRE(c.init->expectLog("deploy #1 | waiting at the gate"));
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGKILL) == 0);
    CHECK(c.init->wait() != 0); // unshare reports its killed child as a failure (1)
    CHECK_THAT(readFile(c.t / "state/state.yaml"), Catch::Contains("outcome: running"));

    c.start();
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: first deployment"));
    CHECK(c.records() == std::vector<std::string>{recorded("1")});
}

TEST_CASE("restarts: an unchanged model is not deployed again, one changed while stopped is", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGTERM) == 0);
    CHECK(c.init->wait() == 0);

    c.start();
    REQUIRE(c.init->expectLog("processes.nix unchanged since deployment #1: nothing to deploy at boot"));
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGTERM) == 0);
    CHECK(c.init->wait() == 0);

    c.save(model("edited-while-down"));
    c.start();
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: at boot"));
    CHECK(c.records().back() == recorded("edited-while-down"));
}

TEST_CASE("SIGHUP deploys now, and an insecure model is refused with the reason", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGHUP) == 0);
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: asked for by SIGHUP"));
    fs::permissions(c.path, fs::perms::others_write, fs::perm_options::add);
    c.save(model("2"));
    REQUIRE(c.init->expectLog("deploy #3: refused"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("the model file " + c.path + " is writable by others (mode 0646)"));
    CHECK(c.records().size() == 2);
}

TEST_CASE("bootstrap: a channel that cannot be updated is logged, never fatal, and tried again", "[deploy]") {
    Container c;
    // Real nix-channel, with its own HOME (it writes ~/.nix-channels); the machine is offline, so
    // --update fails the way a network outage would.
    fs::create_directories(c.t / "home");
    c.start("bootstrap:\n  channel: http://127.0.0.1:9/nixpkgs-unstable\n", {"HOME=" + c.t / "home"});
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("bootstrap: nix-channel --update: exited with status 1; will try again"));
    CHECK_THAT(readFile(c.t / "home/.nix-channels"), Catch::Contains("http://127.0.0.1:9/nixpkgs-unstable nixpkgs"));
    c.save(model("2"));
    REQUIRE(c.done(2));
    CHECK(harness::count(c.init->stderrText(), "bootstrap: nix-channel --update") == 2);
    CHECK_THAT(readFile(c.t / "state/state.yaml"), Catch::Contains("channel_configured: false"));
}

TEST_CASE("a switch past deploy.timeout_s gets SIGTERM, then SIGKILL after the grace, and that is reported", "[deploy]") {
    Container c;
    c.switch_command = "[" + testkit() + ", ignore-term]";
    c.deploy_extra = "  timeout_s: 1\n";
    c.start("shutdown:\n  grace_s: 1\n");
    REQUIRE(c.init->expectLog("deploy #1: timed out", 60s));
    auto log = c.init->stderrText();
    CHECK_THAT(log, Catch::Contains("deploy #1 | still running after 1 s: SIGTERM"));
    CHECK_THAT(log, Catch::Contains("deploy #1 | ignored SIGTERM for 1 s: SIGKILL"));
    CHECK_THAT(log, Catch::Contains("killed by SIGKILL after deploy.timeout_s 1 s"));
    CHECK_THAT(readFile(c.t / "state/state.yaml"), Catch::Contains("outcome: timed out"));
    // The failed deployment took nothing down: the init is still there and stops cleanly.
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGTERM) == 0);
    CHECK(c.init->wait() == 0);
}

TEST_CASE("ids.nix is part of the model: editing it deploys", "[deploy]") {
    Container c;
    writeFile(c.folder + "/ids.nix", "{ ids = { webappPorts = { webapp = 5000; }; }; }\n");
    c.start();
    REQUIRE(c.done(1));
    writeFile(c.folder + "/ids.nix", "{ ids = { webappPorts = { webapp = 5001; }; }; }\n");
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: processes.nix changed"));
    writeFile(c.folder + "/unrelated.nix", "{ }\n"); // not part of the model
    c.sentinel(3);
}

TEST_CASE("an unwritable state folder is reported with the file, and deployments go on", "[deploy]") {
    Container c;
    writeFile(c.t / "blocker", "a file where the state folder's parent should be");
    c.state_dir = c.t / "blocker/state";
    c.start();
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("cannot record the deployment: state file " + c.t / "blocker/state: create folder"));
    c.save(model("2"));
    REQUIRE(c.done(2));
}

TEST_CASE("a second init on the same state folder runs its manager but does not deploy", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    auto first = std::move(c.init);
    c.start();
    REQUIRE(c.init->expectLog("deployments are off"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("/state/lock: held by another nixproc-init"));
    CHECK(c.init->expectLog("sysvinit started"));
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGTERM) == 0);
    CHECK(c.init->wait() == 0);
    c.init = std::move(first); // the first one still deploys
    c.save(model("2"));
    REQUIRE(c.done(2));
}
