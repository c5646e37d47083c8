// nixproc-init as PID 1 on nix-processmgmt's supervisord image layout, unchanged: upstream's
// supervisord.conf at /etc/supervisor/supervisord.conf (an inet port, 127.0.0.1:9001, and no unix
// socket), SUPERVISORD_CONF_DIR=/etc/supervisor, supervisord's default command (upstream's Cmd,
// image-steps/supervisord.nix), real supervisord and supervisorctl, and the demo kit's
// nixproc-supervisord-switch, which runs a bare `supervisorctl` as upstream's does.
//
// Each boot gets a private mount namespace (unshare --mount-proc) in which the test's folders are
// mounted over /etc/supervisor, /var/log and /run, and a private network namespace with only lo up,
// so that port 9001 is its own: tests running in parallel cannot collide on it or reach it.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <set>

using namespace harness;
namespace fs = std::filesystem;

namespace {

const std::string kSwitch = SOURCE_DIR "/packaging/demo/nixproc-supervisord-switch";
const std::string kUpstreamConf = SOURCE_DIR "/tests/fixtures/upstream/supervisord.conf";

// Sets up the namespaces, then execs the init as PID 1: `sh -c SCRIPT sh T INIT ARGS...`.
const char* kEnter = R"(set -e
t=$1
shift
ip link set lo up
mount --bind "$t/etc-supervisor" /etc/supervisor
mount --bind "$t/log" /var/log
mount --bind "$t/run" /run
exec "$@")";

// The model: each process instance is a supervisord program whose command says "NAME VERSION" into
// the FIFO when it starts, built the way nix-processmgmt builds one (create-supervisord-program.nix:
// a package with conf.d/NAME.conf), with builtins.derivation and /bin/sh since there is no nixpkgs.
std::string model(const TempDir& t, const std::map<std::string, int>& versions) {
    std::string nix = "{ ... }:\n"
                      "let\n"
                      "  program = name: version: let\n"
                      "    conf = builtins.derivation {\n"
                      "      name = \"${name}.conf\"; system = builtins.currentSystem; builder = \"/bin/sh\";\n"
                      "      args = [ \"-c\" \"printf '%s\\\\n' \\\"$text\\\" > $out\" ];\n"
                      "      text = ''\n"
                      "        [program:${name}]\n"
                      "        command=/bin/sh -c \"echo ${name} ${version} > " + t / "up" + "; exec sleep 1000\"\n"
                      "        autostart=true\n"
                      "        stopsignal=TERM\n"
                      "        stopwaitsecs=5\n"
                      "        stdout_logfile=/var/log/${name}.log\n"
                      "        redirect_stderr=true\n"
                      "      '';\n"
                      "    };\n"
                      "  in builtins.derivation {\n"
                      "    inherit name; system = builtins.currentSystem; builder = \"/bin/sh\";\n"
                      "    args = [ \"-c\" \"/bin/mkdir -p $out/conf.d && /bin/ln -s ${conf} $out/conf.d/${name}.conf\" ];\n"
                      "  };\n"
                      "in {\n";
    for (const auto& [name, version] : versions)
        nix += "  " + name + " = { pkg = program \"" + name + "\" \"" + std::to_string(version) + "\"; };\n";
    return nix + "}\n";
}

struct Image {
    TempDir t;
    std::unique_ptr<Fifo> up;
    std::unique_ptr<Child> init;

    Image() {
        t.write("etc-supervisor/supervisord.conf", readFile(kUpstreamConf));
        // run/lock: Debian's /var/lock is a link to /run/lock, which the state folders' set-up
        // (nixproc-init-state's mkdir -p) must find in the /run mounted here.
        for (const char* folder : {"etc-supervisor/conf.d", "log", "run/lock", "profiles", "state", "nixproc"})
            fs::create_directories(t / folder);
        fs::permissions(t / "nixproc", fs::perms(0755)); // a model in a folder only root can write
        t.write("nix/nix.conf", "build-users-group =\nsandbox = false\nsubstituters =\n");
        t.write("init.yaml", "process_manager: supervisord\n"
                             "processes: " + t / "nixproc/processes.nix" + "\n"
                             "profile: " + t / "profiles/processes" + "\n"
                             "state_dir: " + t / "state" + "\n"
                             "bootstrap: {channel: \"\"}\n"
                             "deploy:\n  command: [" + kSwitch + "]\n"
                             "shutdown:\n  grace_s: 8\n");
        up = std::make_unique<Fifo>(t / "up");
    }

    void setModel(const std::map<std::string, int>& versions) { t.write("nixproc/processes.nix", model(t, versions)); }

    void boot() {
        std::vector<std::string> command{"unshare", "--net", "--", "/bin/sh", "-c", kEnter, "sh", t.path, initBinary(), "-c", t / "init.yaml"};
        init = std::make_unique<Child>(inPidNamespace(command),
                                       Options{.env = {"SUPERVISORD_CONF_DIR=/etc/supervisor", "NIX_CONF_DIR=" + t / "nix"}});
    }

    void stop() {
        auto asked = std::chrono::steady_clock::now();
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait(30s) == 0);
        CHECK(std::chrono::steady_clock::now() - asked < 8s); // within the grace
        CHECK_THAT(init->stderrText(), !Catch::Contains("SIGKILL"));
        // (not pid 2: the namespace's set-up ran before the init, as the same PID 1)
        CHECK_THAT(init->stderrText(), Catch::Contains("supervisord (pid ") && Catch::Contains(") exited with status 0"));
    }

    bool deployed(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 120s, deployFailures(n)); }

    // The programs that said they started, until `count` did.
    std::multiset<std::string> started(std::size_t count) {
        std::multiset<std::string> lines;
        while (lines.size() < count) {
            auto line = up->readLine(30s);
            if (!line) break;
            lines.insert(*line);
        }
        return lines;
    }

    std::string link(const std::string& name) const {
        std::error_code ec;
        return fs::read_symlink(t / ("etc-supervisor/conf.d/" + name + ".conf"), ec).string();
    }
};

} // namespace

TEST_CASE("upstream's supervisord image: ready on the inet port, deploys with a bare supervisorctl, restarts, stops",
          "[managers][supervisord][upstream]") {
    Image image;
    image.setModel({{"a", 1}, {"b", 1}});
    image.boot();

    // No unix socket: readiness is the inet port of upstream's supervisord.conf, said once.
    REQUIRE(image.init->expectLog("supervisord is ready (127.0.0.1:9001 answers", 30s));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("[inet_http_server]"));
    // Upstream's layout draws no warning: SUPERVISORD_CONF_DIR is the config's folder, and a bare
    // supervisorctl reads /etc/supervisor/supervisord.conf.
    CHECK_THAT(image.init->stderrText(), !Catch::Contains("nixproc-init warning:"));

    REQUIRE(image.deployed(1));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("deploy #1: +a +b"));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("a: added process group")); // the bare supervisorctl update
    CHECK(image.started(2) == std::multiset<std::string>{"a 1", "b 1"});
    std::string a1 = image.link("a");
    CHECK(a1.starts_with("/nix/store/"));
    CHECK(fs::read_symlink(image.t / "profiles/processes") == "processes-1-link");

    // A change: a restarted with its new program, b left alone.
    image.setModel({{"a", 2}, {"b", 1}});
    REQUIRE(image.deployed(2));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("deploy #2: ~a =b"));
    CHECK(image.started(1) == std::multiset<std::string>{"a 2"});
    CHECK(image.link("a") != a1);

    // A removal: b stopped, its link gone.
    image.setModel({{"a", 2}});
    REQUIRE(image.deployed(3));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("deploy #3: -b =a"));
    CHECK(image.link("b").empty());
    CHECK(fs::read_symlink(image.t / "profiles/processes") == "processes-3-link");
    image.stop();
    CHECK_THAT(readFile(image.t / "log/supervisord.log"), Catch::Contains("stopped: b") && Catch::Contains("stopped: a"));

    // A second boot on the same folders: nothing to deploy, and supervisord starts what conf.d holds.
    image.boot();
    REQUIRE(image.init->expectLog("supervisord is ready (127.0.0.1:9001 answers", 30s));
    REQUIRE(image.init->expectLog("unchanged since deployment #3: nothing to deploy at boot", 60s, {"deploy #4: "}));
    CHECK(image.started(1) == std::multiset<std::string>{"a 2"});
    image.stop();
}
