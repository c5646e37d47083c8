// The deployment engine with real inotify, real nix-instantiate --parse, and a stand-in for
// nixproc-sysvinit-switch that records what it deployed (tests/standins/).
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
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
    // The init tells it the profile as upstream's switch takes it: -p profile, NIX_USER_PROFILE_DIR=t.
    std::string switch_command = "[nixproc-sysvinit-switch]";
    std::string deploy_extra; // more keys of the deploy section
    std::string manager = "sysvinit";
    std::string profile_name = "profile"; // not upstream's `processes`: the switch gets -p profile

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
        auto yaml = t.write("init.yaml", "process_manager: " + manager + "\nprocesses: " + path + "\nprofile: " + t / profile_name +
                                             "\nstate_dir: " + state_dir + "\nwatch:\n  debounce_ms: " + std::to_string(debounce_ms) +
                                             "\ndeploy:\n  command: " + switch_command + "\n" + deploy_extra + extra_yaml);
        env.push_back(std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin");
        env.push_back("NIXPROC_STANDIN_LOG=" + t / "deployed");
        std::vector<std::string> argv = inPidNamespace({initBinary(), "-c", yaml});
        init = std::make_unique<Child>(argv, Options{.env = env});
    }

    // Stops at once when deployment n fails, is refused, times out or is interrupted.
    bool done(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }

    pid_t pid1() const { return namespaceInit(init->pid()); }

    // docker stop: SIGTERM, and the init exits 0 within the grace.
    void stop() {
        REQUIRE(::kill(pid1(), SIGTERM) == 0);
        CHECK(init->wait(20s) == 0);
    }

    // A save after everything else: if it becomes deployment n, nothing else was deployed between.
    void sentinel(int n) {
        save(model("sentinel" + std::to_string(n)));
        REQUIRE(done(n));
        CHECK(records().back() == recorded("sentinel" + std::to_string(n)));
        CHECK(records().size() == static_cast<size_t>(n));
    }
};

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Lets one waiter at a gate FIFO (see the stand-in switch) through; the test holds the FIFO's
// read end open (harness::Fifo), so this never blocks.
void openGate(const std::string& gate) {
    int fd = ::open(gate.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "go\n", 3) == 3);
    ::close(fd);
}

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
            // The trigger names what changed: the model, and with some save styles its folder too.
            CHECK_THAT(c.init->stderrText(), Catch::Matches("[\\s\\S]*deploy #2: (\\S+, )?processes\\.nix changed\n[\\s\\S]*"));
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
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy.check failed: nix-instantiate exited with status 1 (its output above says "
                                                     "why): not switching; the running services are as they were"));
    REQUIRE(c.init->expectLog("the next change of the model (or SIGHUP) deploys again"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("trying again"));
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

// Real nix-channel, with its own HOME (it writes ~/.nix-channels), and a channel on a closed local
// port: --update fails the way a network outage would, on any machine. (The harness turns the
// channel off for every other test, through the environment, which a file's key cannot override.)
const std::string kUnreachableChannel = "NIXPROC_INIT_BOOTSTRAP_CHANNEL=http://127.0.0.1:9/nixpkgs-unstable";

TEST_CASE("bootstrap: a channel that cannot be set up is one line, and the deployment goes ahead without waiting again", "[deploy]") {
    Container c;
    fs::create_directories(c.t / "home");
    c.start("", {"HOME=" + c.t / "home", kUnreachableChannel});
    REQUIRE(c.done(1));
    // What it does, then what came of it: nix's own retries stay at debug.
    CHECK(harness::count(c.init->stderrText(), "bootstrap") == 2);
    CHECK_THAT(c.init->stderrText(), Catch::Contains("bootstrap: adding and updating channel "
                                                     "http://127.0.0.1:9/nixpkgs-unstable (at most 600 s each)"));
    CHECK_THAT(c.init->stderrText(),
               Catch::Contains("bootstrap: channel http://127.0.0.1:9/nixpkgs-unstable not set up (nix-channel --update exited "
                               "with status 1: error: unable to download 'http://127.0.0.1:9/nixpkgs-unstable'") &&
                   Catch::Contains("deploying without it, next try before a deployment in 10 s or later"));
    CHECK_THAT(readFile(c.t / "home/.nix-channels"), Catch::Contains("http://127.0.0.1:9/nixpkgs-unstable nixpkgs"));
    c.save(model("2")); // within deploy.retry_backoff_s (10 s): no second wait for the network
    REQUIRE(c.done(2));
    CHECK(harness::count(c.init->stderrText(), "bootstrap") == 2);
    CHECK_THAT(readFile(c.t / "state/state.yaml"), Catch::Contains("channel_configured: false"));
    c.stop();
}

TEST_CASE("bootstrap: a channel that failed is tried again before a deployment after the backoff, doubled", "[deploy]") {
    Container c;
    fs::create_directories(c.t / "home");
    c.deploy_extra = "  retry_backoff_s: 1\n";
    c.start("", {"HOME=" + c.t / "home", kUnreachableChannel});
    REQUIRE(c.done(1));
    REQUIRE(harness::count(c.init->stderrText(), "bootstrap: channel") == 1);
    // The backoff is the behaviour under test: only the passing of time ends it.
    std::this_thread::sleep_for(1100ms);
    c.save(model("2"));
    REQUIRE(c.done(2));
    CHECK(harness::count(c.init->stderrText(), "bootstrap: channel") == 2);
    CHECK_THAT(c.init->stderrText(), Catch::Contains("next try before a deployment in 2 s or later"));
    c.stop();
}

TEST_CASE("bootstrap: a channel server that accepts and never answers is given up after bootstrap.timeout_s", "[deploy]") {
    Container c;
    fs::create_directories(c.t / "home");
    // A server that accepts connections and never says a word (the kernel accepts into the backlog).
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(server >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(server, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/nixpkgs-unstable";
    c.start("bootstrap:\n  timeout_s: 2\n", {"HOME=" + c.t / "home", "NIXPROC_INIT_BOOTSTRAP_CHANNEL=" + url});
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("bootstrap: channel " + url + " not set up (nix-channel --update still "
                                                     "running after bootstrap.timeout_s 2 s"));
    c.stop();
    ::close(server);
}

TEST_CASE("bootstrap: no channel set-up when root's channels profile exists already", "[deploy]") {
    Container c;
    fs::create_directories(c.t / "home");
    fs::create_directories(c.t / "nix/profiles/per-user/root");
    fs::create_directory_symlink("channels-1-link", c.t / "nix/profiles/per-user/root/channels");
    c.deploy_extra = "  check: []\n"; // nix-instantiate would initialise a store under NIX_STATE_DIR
    c.start("", {"HOME=" + c.t / "home", "NIX_STATE_DIR=" + c.t / "nix", kUnreachableChannel});
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("bootstrap: root's channels profile " + c.t / "nix/profiles/per-user/root/channels" +
                                                     " exists: no channel set-up"));
    CHECK_FALSE(fs::exists(c.t / "home/.nix-channels"));
    c.stop();
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
    CHECK_THAT(log, Catch::Contains("killed by SIGKILL after deploy.timeout_s 1 s; the profile was not switched, but services "
                                    "may be partly updated"));
    CHECK_THAT(readFile(c.t / "state/state.yaml"), Catch::Contains("outcome: timed out"));
    // The failed deployment took nothing down: the init is still there and stops cleanly.
    REQUIRE(::kill(namespaceInit(c.init->pid()), SIGTERM) == 0);
    CHECK(c.init->wait() == 0);
}

TEST_CASE("ids.nix and every other .nix file are part of the model, other files are not", "[deploy]") {
    Container c;
    writeFile(c.folder + "/ids.nix", "{ ids = { webappPorts = { webapp = 5000; }; }; }\n");
    c.start();
    REQUIRE(c.done(1));
    writeFile(c.folder + "/ids.nix", "{ ids = { webappPorts = { webapp = 5001; }; }; }\n");
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: ids.nix changed"));
    writeFile(c.folder + "/constructors.nix", "{ }\n"); // imported by a model: part of it
    REQUIRE(c.done(3));
    writeFile(c.folder + "/README.txt", "notes\n"); // not part of the model
    c.sentinel(4);
}

TEST_CASE("an unwritable state folder is reported with the file, and deployments go on", "[deploy]") {
    Container c;
    writeFile(c.t / "blocker", "a file where the state folder's parent should be");
    c.state_dir = c.t / "blocker/state";
    c.start();
    REQUIRE(c.done(1));
    auto log = c.init->stderrText();
    CHECK_THAT(log, Catch::Contains("state folder " + c.t / "blocker/state: " + c.t.path + "/blocker/state: create folder: Not a directory; "
                                    "deploying without a lock and without records"));
    CHECK(harness::count(log, "without records") == 1);
    c.save(model("2"));
    REQUIRE(c.done(2));
    CHECK(harness::count(c.init->stderrText(), "without records") == 1); // said once, not per deployment
    CHECK(c.records().back() == recorded("2"));
    c.stop();
}

TEST_CASE("a state folder that others can write is not used, and deployments go on", "[deploy]") {
    Container c;
    fs::create_directories(c.state_dir);
    fs::permissions(c.state_dir, fs::perms::all);
    c.start();
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("the folder " + c.state_dir + " is writable by others (mode 0777)"));
    CHECK_FALSE(fs::exists(c.state_dir + "/state.yaml"));
    c.stop();
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

TEST_CASE("a model file that is a FIFO or leads to /dev/zero is an error, and the init stays responsive", "[deploy]") {
    for (const std::string style : {"ids.nix is a FIFO", "processes.nix links to /dev/zero"}) {
        DYNAMIC_SECTION(style) {
            Container c;
            if (style == "ids.nix is a FIFO") REQUIRE(::mkfifo((c.folder + "/ids.nix").c_str(), 0644) == 0);
            else {
                fs::remove(c.path);
                fs::create_symlink("/dev/zero", c.path);
            }
            c.start();
            REQUIRE(c.init->expectLog("cannot read the model: "));
            CHECK_THAT(c.init->stderrText(), Catch::Contains(style == "ids.nix is a FIFO"
                                                                 ? c.folder + "/ids.nix is a FIFO, not a regular file; nothing deployed"
                                                                 : c.path + " is a character device, not a regular file; nothing deployed"));
            c.stop(); // the loop was never blocked: SIGTERM is handled at once

            CHECK(c.records().empty());
        }
    }
}

TEST_CASE("the init paused across the debounce, then stopped, runs no handler on the gone watcher", "[deploy]") {
    // docker pause freezes the init after a save; the quiet period ends while it is frozen, and
    // docker stop's SIGTERM arrives before it runs again: the debounce's completion is already
    // queued when the shutdown destroys the watcher (a use after free under ASan before).
    Container c;
    c.debounce_ms = 200;
    c.start("", {"NIXPROC_INIT_LOG_LEVEL=debug"});
    REQUIRE(c.done(1));
    pid_t pid = c.pid1();
    c.save(model("2"));
    REQUIRE(c.init->expectLog("processes.nix saved: deploying after 200 ms of quiet"));
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    ::usleep(400'000); // the quiet period passes while the init is frozen: the scenario itself
    REQUIRE(::kill(pid, SIGTERM) == 0);
    REQUIRE(::kill(pid, SIGCONT) == 0);
    CHECK(c.init->wait(20s) == 0);
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("AddressSanitizer"));
}

TEST_CASE("a follow-up queued during a deployment waits for the saves to be quiet before it reads the model", "[deploy]") {
    Container c;
    c.debounce_ms = 1000;
    Fifo gate(c.t / "gate");
    c.start("", {"NIXPROC_STANDIN_GATE=" + c.t / "gate"});
    REQUIRE(c.init->expectLog("deploy #1 | waiting at the gate"));
    openGate(c.t / "gate");
    REQUIRE(c.done(1));
    c.save(model("2"));
    REQUIRE(c.init->expectLog("deploy #2 | waiting at the gate"));
    c.save(model("3"));
    REQUIRE(c.init->expectLog("deploy #2: still running; a deployment of the model after it"));
    // An editor starts writing the next version, and deploy #2 ends in the middle of it.
    c.save("{\n  webapp = \"4\";\n");
    openGate(c.t / "gate");
    REQUIRE(c.done(2));
    // Before, the follow-up started here at once and its check read the half-written file.
    CHECK_FALSE(c.init->expectLog("deploy #3: failed", 400ms));
    c.save(model("4")); // the editor finishes, still within the quiet period of its first write
    REQUIRE(c.init->expectLog("deploy #3 | waiting at the gate"));
    openGate(c.t / "gate");
    REQUIRE(c.done(3));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("deploy #3: failed"));
    CHECK(c.records() == std::vector<std::string>{recorded("1"), recorded("2"), recorded("4")});
    c.stop();
}

TEST_CASE("a deployment deploys the content it fingerprinted, whatever is saved while it runs", "[deploy]") {
    // Held in its check, deploy #2 (of B) sees C saved; held in its switch, B saved again. Before,
    // the switch read C while B was recorded, and the follow-up of B found "nothing to do".
    Container c;
    Fifo events(c.t / "events");
    Fifo check_gate(c.t / "check-gate");
    Fifo switch_gate(c.t / "switch-gate");
    c.deploy_extra = "  check: [sh, -c, 'echo checking > " + c.t / "events" + "; read -r _ < " + c.t / "check-gate" + "', check]\n";
    c.start("", {"NIXPROC_STANDIN_GATE=" + c.t / "switch-gate"});
    REQUIRE(events.readLine() == "checking");
    openGate(c.t / "check-gate");
    REQUIRE(c.init->expectLog("deploy #1 | waiting at the gate"));
    openGate(c.t / "switch-gate");
    REQUIRE(c.done(1));

    c.save(model("B"));
    REQUIRE(events.readLine() == "checking");
    c.save(model("C"));
    REQUIRE(c.init->expectLog("deploy #2: still running"));
    openGate(c.t / "check-gate");
    REQUIRE(c.init->expectLog("deploy #2 | waiting at the gate"));
    c.save(model("B"));
    openGate(c.t / "switch-gate");
    REQUIRE(c.done(2));
    REQUIRE(c.init->expectLog("processes.nix saved, unchanged since deployment #2: nothing to do"));
    CHECK(c.records() == std::vector<std::string>{recorded("1"), recorded("B")});
    c.stop();
}

TEST_CASE("an inotify queue overflow counts as a change, and the save lost in it is deployed", "[deploy]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    pid_t pid = c.pid1();
    // Frozen, the init reads no event: 17,000 new files overflow the queue (16,384 by default),
    // and the save after them is dropped with the rest.
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    for (int i = 0; i < 17'000; ++i) {
        int fd = ::open((c.folder + "/scratch-" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        ::close(fd);
    }
    c.save(model("2"));
    REQUIRE(::kill(pid, SIGCONT) == 0);
    REQUIRE(c.done(2));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("inotify queue overflow on " + c.folder));
    CHECK(c.records().back() == recorded("2"));
    c.stop();
}

TEST_CASE("kill -9 during a SIGHUP deployment of an unchanged model: the next start deploys again", "[deploy]") {
    Container c;
    Fifo gate(c.t / "gate");
    c.start("", {"NIXPROC_STANDIN_GATE=" + c.t / "gate"});
    REQUIRE(c.init->expectLog("deploy #1 | waiting at the gate"));
    openGate(c.t / "gate");
    REQUIRE(c.done(1));
    REQUIRE(::kill(c.pid1(), SIGHUP) == 0);
    REQUIRE(c.init->expectLog("deploy #2 | waiting at the gate"));
    REQUIRE(::kill(c.pid1(), SIGKILL) == 0);
    c.init->wait();
    CHECK_THAT(readFile(c.state_dir + "/state.yaml"), Catch::Contains("outcome: running"));

    c.start();
    REQUIRE(c.done(3));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2 did not finish (running): deploying again"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("nothing to deploy"));
    c.stop();
}

TEST_CASE("process_manager none deploys with an explicit deploy.command, and says so when it has none", "[deploy]") {
    Container c;
    c.manager = "none";
    c.start("manager:\n  command: [" + testkit() + ", catch-all]\n");
    REQUIRE(c.done(1));
    c.save(model("2"));
    REQUIRE(c.done(2));
    CHECK(c.records().back() == recorded("2"));
    REQUIRE(::kill(c.pid1(), SIGTERM) == 0);
    CHECK(c.init->wait(20s) == 128 + SIGTERM); // the main child's own status

    Container plain;
    auto yaml = plain.t.write("init.yaml", "process_manager: none\nprocesses: " + plain.path + "\nstate_dir: " + plain.state_dir + "\n");
    Child init(inPidNamespace({initBinary(), "-c", yaml, "--", "sh", "-c", "exit 0"}));
    CHECK(init.wait() == 0);
    CHECK_THAT(init.stderrText(), Catch::Contains("process_manager none and no deploy.command in " + yaml + ": " + plain.path +
                                                  " is neither deployed nor watched"));
}

TEST_CASE("a deployment that timed out is tried again after a backoff, and one killed from outside too", "[deploy]") {
    for (const std::string style : {"timed out", "killed from outside"}) {
        DYNAMIC_SECTION(style) {
            Container c;
            // The first try hangs (and says its pid); the next ones are the real stand-in.
            auto wrapper = c.t.write("switch", "#!/bin/sh\n"
                                               "if [ ! -e " + c.t / "tried" + " ]; then\n"
                                               "  touch " + c.t / "tried" + "; echo hanging; exec sleep 1000\n"
                                               "fi\n"
                                               "exec nixproc-sysvinit-switch \"$@\"\n", 0755);
            // Not named nixproc-*-switch, it gets the environment (NIX_USER_PROFILE_DIR) but no options.
            c.switch_command = "[" + wrapper + ", -p, profile]";
            c.deploy_extra = std::string(style == "timed out" ? "  timeout_s: 1\n" : "") + "  retries: 2\n  retry_backoff_s: 1\n";
            c.start("shutdown:\n  grace_s: 1\n");
            REQUIRE(c.init->expectLog("deploy #1 | hanging"));
            if (style == "killed from outside") {
                // The init's only child is the switch (sysvinit has no main child).
                auto children = nixproc::childrenOf(c.pid1());
                REQUIRE(children.size() == 1);
                REQUIRE(::kill(children.front(), SIGKILL) == 0); // as the OOM killer would
                REQUIRE(c.init->expectLog("deploy #1: interrupted"));
            } else {
                REQUIRE(c.init->expectLog("deploy #1: timed out"));
            }
            REQUIRE(c.init->expectLog("trying again in 1 s (1 of 2)"));
            REQUIRE(c.done(2));
            CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #2: trying again (1 of 2)"));
            CHECK(c.records() == std::vector<std::string>{recorded("1")});
            c.stop();
        }
    }
}

TEST_CASE("a check that crashes (SIGABRT) is a failure that waits for the next change, not tried again", "[deploy]") {
    Container c;
    c.deploy_extra = "  check: [sh, -c, 'kill -ABRT $$']\n  retries: 2\n  retry_backoff_s: 1\n";
    c.start();
    REQUIRE(c.init->expectLog("deploy #1: failed"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("killed by SIGABRT"));
    REQUIRE(c.init->expectLog("the next change of the model (or SIGHUP) deploys again"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("trying again"));
    c.stop();
}

TEST_CASE("a model under a folder that others can write is refused, and so is a link into one", "[deploy]") {
    for (const std::string style : {"world-writable parent", "symlink into a world-writable folder"}) {
        DYNAMIC_SECTION(style) {
            Container c;
            std::string why;
            if (style == "world-writable parent") {
                fs::permissions(c.t / "etc", fs::perms::all); // anyone may rename etc/nixproc away
                why = "the folder " + c.t / "etc" + " is writable by others (mode 0777)";
            } else {
                fs::create_directories(c.t / "drop");
                fs::permissions(c.t / "drop", fs::perms::all);
                writeFile(c.t / "drop/processes.nix", model("1"));
                fs::remove(c.path);
                fs::create_symlink(c.t / "drop/processes.nix", c.path);
                why = "the folder " + c.t / "drop" + " is writable by others (mode 0777)";
            }
            c.start();
            REQUIRE(c.init->expectLog("deploy #1: refused"));
            CHECK_THAT(c.init->stderrText(), Catch::Contains(why));
            CHECK(c.records().empty());
            c.stop();
        }
    }
}

TEST_CASE("a switch that fails after setting the profile says so, and how to go back", "[deploy]") {
    Container c;
    c.profile_name = "processes"; // upstream's own: its rollback works on it for sysvinit too
    // Named as upstream's switch (rollback is for those), running the stand-in from PATH; it
    // fails after its work once the mark exists.
    auto mark = c.t / "fail";
    auto wrapper = c.t.write("bin/nixproc-sysvinit-switch",
                             "#!/bin/sh\n" STANDINS_DIR "/nixproc-sysvinit-switch \"$@\" || exit\n"
                             "[ -e " + mark + " ] || exit 0\necho 'supervisorctl: ERROR'\nexit 1\n", 0755);
    c.switch_command = "[" + wrapper + "]";
    c.start();
    REQUIRE(c.done(1));
    // The first deployment has nothing to go back to.
    writeFile(mark, "");
    c.save(model("2"));
    REQUIRE(c.init->expectLog("deploy #2: failed"));
    REQUIRE(c.init->expectLog("the next change of the model (or SIGHUP) deploys again"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("; the profile was switched to processes-2-link, but services may be partly "
                                                     "updated (the switch's output above says which); the next change or SIGHUP "
                                                     "deploys again, `nixproc-initctl rollback --to 1` goes back to the "
                                                     "generation that ran before"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("the running services are as they were"));
    c.stop();
}

TEST_CASE("gc deletes all but the last generations after each deployment and collects after every K, never while one runs", "[deploy][gc]") {
    Container c;
    c.profile_name = "processes";
    // nix-collect-garbage for real, on a store of the test's own.
    c.start("gc:\n  keep_generations: 1\n  collect_after_deployments: 2\n", {"NIX_CONFIG=store = " + c.t / "store"});
    REQUIRE(c.done(1));
    REQUIRE(c.init->expectLog("gc after deploy #1: done", 60s, {"gc after deploy #1: nix-env failed"}));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("gc after deploy #1: nix-env -p " + c.t / "processes" + " --delete-generations +1"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("nix-collect-garbage"));
    c.save(model("2"));
    REQUIRE(c.done(2));
    REQUIRE(c.init->expectLog("gc after deploy #2: done", 60s, {"gc after deploy #2: nix-env failed", "gc after deploy #2: nix-collect-garbage failed"}));
    const std::string& log = c.init->stderrText();
    CHECK(log.find("gc after deploy #2: nix-collect-garbage") > log.find("deploy #2: done"));
    CHECK_THAT(log, Catch::Contains("gc after deploy #2 | 0 store paths deleted"));
    std::vector<std::string> links;
    for (const auto& e : fs::directory_iterator(c.t.path))
        if (e.path().filename().string().ends_with("-link")) links.push_back(e.path().filename());
    CHECK(links == std::vector<std::string>{"processes-2-link"});
    c.stop();
}

TEST_CASE("gc on a schedule runs nix-collect-garbage at its times, and deployments go on after it", "[deploy][gc]") {
    Container c;
    c.start("gc:\n  collect_every_h: 0.0003\n", {"NIX_CONFIG=store = " + c.t / "store"}); // about 1 s
    REQUIRE(c.done(1));
    REQUIRE(c.init->expectLog("gc (gc.collect_every_h): done", 30s, {"gc (gc.collect_every_h): nix-collect-garbage failed"}));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("gc (gc.collect_every_h): nix-collect-garbage"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("--delete-generations"));
    c.save(model("2"));
    REQUIRE(c.done(2));
    c.stop();
}

TEST_CASE("with deploy.on_failure rollback a switch that fails after switching the profile is rolled back as a deployment of its own", "[deploy][rollback]") {
    Container c;
    c.profile_name = "processes";
    auto mark = c.t / "fail";
    // Fails after its work once the mark exists, but not when it rolls back.
    auto wrapper = c.t.write("bin/nixproc-sysvinit-switch",
                             "#!/bin/sh\n" STANDINS_DIR "/nixproc-sysvinit-switch \"$@\" || exit\n"
                             "case \" $* \" in *' --rollback '*) exit 0 ;; esac\n"
                             "[ -e " + mark + " ] || exit 0\necho 'rc S20webapp2: ERROR'\nexit 1\n", 0755);
    c.switch_command = "[" + wrapper + "]";
    c.deploy_extra = "  on_failure: rollback\n";
    c.start();
    REQUIRE(c.done(1));
    writeFile(mark, "");
    c.save(model("2"));
    REQUIRE(c.init->expectLog("deploy #2: failed"));
    REQUIRE(c.done(3));
    const std::string& log = c.init->stderrText();
    CHECK_THAT(log, Catch::Contains("deploy #3: rollback after the failed deployment (deploy.on_failure: rollback)"));
    CHECK_THAT(log, Catch::Contains("deploy #3: from generation 2 to 1"));
    CHECK_THAT(log, !Catch::Contains("goes back to the generation that ran before")); // it is done, not suggested
    CHECK_THAT(log, Catch::Contains("deploy #3: ~webapp =nginx")); // webapp back to generation 1's
    CHECK(fs::read_symlink(c.t / "processes") == "processes-3-link"); // upstream's --rollback makes a new generation
    // The model itself is not deployed again until it changes.
    c.save(model("2")); // saved again, unchanged
    REQUIRE(c.init->expectLog("unchanged since a rollback undid its deployment: nothing to do"));
    fs::remove(mark);
    c.save(model("3"));
    REQUIRE(c.done(4));
    CHECK(c.records().back() == recorded("3"));
    c.stop();
}

TEST_CASE("a model folder that others could write is trusted on a read-only mount, as the kubelet mounts a ConfigMap", "[deploy]") {
    Container c;
    // The model's folder becomes a tmpfs of mode 1777 holding a copy of the model, then read-only,
    // in the init's own mount namespace; the init starts after that.
    std::string ro = c.t / "configmap";
    fs::create_directories(ro);
    auto yaml = c.t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + ro + "/processes.nix\nprofile: " + c.t / "profile" +
                                           "\nstate_dir: " + c.state_dir + "\ndeploy:\n  command: [nixproc-sysvinit-switch]\n");
    std::string script = "mount -t tmpfs -o mode=1777 tmpfs " + ro + " && cp " + c.path + " " + ro + "/ && mount -o remount,ro " + ro +
                         " && exec " + initBinary() + " -c " + yaml;
    std::vector<std::string> env{std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin",
                                 "NIXPROC_STANDIN_LOG=" + c.t / "deployed"};
    c.init = std::make_unique<Child>(inPidNamespace({"/bin/sh", "-c", script}), Options{.env = env});
    REQUIRE(c.done(1));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("writable by others"));
    c.stop();
}
