// The real nixproc-initctl against the real nixproc-init as PID 1 of a PID namespace: the control
// socket end to end. Deployments use the sysvinit stand-in switch (tests/standins/), as DeployTest.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

struct Ran {
    int code = -1;
    std::string out, err;
};

// `env -u NIXPROC_INIT_CONTROL_SOCKET ENV... COMMAND...`: the harness sets that variable empty for
// every program it runs (no test shares the host's socket); these tests say where it is themselves.
std::vector<std::string> withOwnSocket(std::vector<std::string> command, const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv{"env", "-u", "NIXPROC_INIT_CONTROL_SOCKET"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
}

// nixproc-initctl ARGS..., to its end.
Ran initctl(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), NIXPROC_INITCTL_BIN);
    Child c(withOwnSocket(args, env));
    Ran r;
    r.code = c.wait(60s);
    r.out = c.outputText();
    r.err = c.stderrText();
    return r;
}

std::string model(const std::string& version) { return "{\n  webapp = \"" + version + "\";\n  nginx = \"1\";\n}\n"; }

// An init with the sysvinit stand-in deploying the model, and its control socket in the test's folder.
struct Container {
    TempDir t;
    std::string folder = t / "etc/nixproc";
    std::string path = folder + "/processes.nix";
    std::string socket = t / "run/control.sock";
    std::unique_ptr<Child> init;

    Container() {
        fs::create_directories(folder);
        save(model("1"));
    }
    void save(const std::string& text) const { std::ofstream(path, std::ios::trunc) << text; }

    void start(std::vector<std::string> env = {}) {
        auto yaml = t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + path + "\nprofile: " + t / "processes" +
                                             "\nstate_dir: " + t / "state" + "\nwatch:\n  debounce_ms: 100" +
                                             "\ndeploy:\n  command: [nixproc-sysvinit-switch]\ncontrol:\n  socket: " + socket + "\n");
        env.push_back(std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin");
        env.push_back("NIXPROC_STANDIN_LOG=" + t / "deployed");
        init = std::make_unique<Child>(inPidNamespace(withOwnSocket({initBinary(), "-c", t / "init.yaml"})), Options{.env = env});
    }
    bool done(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }
    Ran ctl(std::vector<std::string> args) {
        args.insert(args.begin(), {"--socket", socket});
        return initctl(std::move(args));
    }
    void stop() {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait(20s) == 0);
    }
};

// Lets one waiter at a gate FIFO (see the stand-in switch) through.
void openGate(const std::string& gate) {
    int fd = ::open(gate.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "go\n", 3) == 3);
    ::close(fd);
}

// A connection that says nothing.
struct Silent {
    int fd = -1;
    explicit Silent(const std::string& path) {
        fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        connected = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    ~Silent() { ::close(fd); }
    Silent(const Silent&) = delete;
    Silent& operator=(const Silent&) = delete;
    bool connected = false;
    // Whatever the server says before it closes, within `timeout`; nullopt if it did not close.
    std::optional<std::string> closing(std::chrono::milliseconds timeout) {
        std::string got;
        auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
            if (left <= 0ms) return std::nullopt;
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[4096];
            ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n <= 0) return got;
            got.append(chunk, static_cast<std::size_t>(n));
        }
    }
};

} // namespace

TEST_CASE("initctl status, history and health tell what a deploying init does", "[control]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));

    Ran status = c.ctl({"status"});
    INFO(status.out << status.err);
    CHECK(status.code == 0);
    CHECK_THAT(status.out, Catch::Contains("phase:        running, up "));
    CHECK_THAT(status.out, Catch::Contains("manager:      sysvinit, ready for "));
    CHECK_THAT(status.out, Catch::Contains("ready:        yes: deploy #1 succeeded"));
    CHECK_THAT(status.out, Catch::Contains("deployment:   none running (idle)"));
    CHECK_THAT(status.out, Catch::Contains("last:         #1 succeeded (boot) "));
    CHECK_THAT(status.out, Catch::Contains("last success: #1 succeeded (boot) "));
    CHECK_THAT(status.out, Catch::Contains("watcher:      watching"));
    CHECK_THAT(status.out, Catch::Contains("deployments:  1 succeeded"));

    Ran json = c.ctl({"status", "--json"});
    CHECK(json.code == 0);
    CHECK_THAT(json.out, Catch::StartsWith(R"({"ok":true,"status":{"phase":"running","manager":"sysvinit",)"));
    CHECK_THAT(json.out, Catch::Contains(R"("stage":"idle")"));

    Ran ready = c.ctl({"health"});
    CHECK(ready.code == 0);
    CHECK(ready.out == "ready: deploy #1 succeeded\n");
    Ran live = c.ctl({"health", "--live"});
    CHECK(live.code == 0);
    CHECK_THAT(live.out, Catch::StartsWith("live: "));

    c.save(model("2"));
    REQUIRE(c.done(2));
    Ran history = c.ctl({"history"});
    CHECK(history.code == 0);
    INFO(history.out);
    auto lines = history.out;
    CHECK_THAT(lines, Catch::Matches(R"(#1  succeeded  boot   \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \+nginx \+webapp\n)"
                                     R"(#2  succeeded  watch  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  ~webapp =nginx\n)"));
    Ran last = c.ctl({"history", "-n", "1"});
    CHECK_THAT(last.out, Catch::StartsWith("#2  succeeded  watch  "));
    c.stop();
}

TEST_CASE("initctl deploy --wait prints the deployment's lines as they come and exits with its outcome", "[control]") {
    Container c;
    // The stand-in switch waits for a line on the gate before it switches: the test holds
    // deployment #2 there while it reads what the client printed so far.
    auto gate = c.t / "gate";
    Fifo keep(gate); // makes it, and holds its read end: opening its write end never blocks
    c.start({"NIXPROC_STANDIN_GATE=" + gate});
    openGate(gate);
    REQUIRE(c.done(1));

    SECTION("a deployment that succeeds") {
        Child wait({NIXPROC_INITCTL_BIN, "--socket", c.socket, "deploy", "--wait"});
        auto first = wait.readLine();
        REQUIRE(first);
        CHECK_THAT(*first, Catch::Contains(" nixproc-init info: deploy #2: ")); // the init's log line, as it is
        CHECK_THAT(wait.outputText(), !Catch::Contains("succeeded"));
        openGate(gate);
        CHECK(wait.wait(60s) == 0);
        INFO(wait.outputText() << wait.stderrText());
        CHECK_THAT(wait.outputText(), Catch::Contains(": deploy #2: done"));
        CHECK_THAT(wait.outputText(), Catch::EndsWith("\ndeploy #2 succeeded\n"));
        CHECK_THAT(wait.outputText(), !Catch::Contains("deploy #1"));
    }
    SECTION("a deployment that fails") {
        c.save("{ webapp = ; }");
        Ran failed = c.ctl({"deploy", "--wait"});
        INFO(failed.out << failed.err);
        CHECK(failed.code == 1);
        CHECK_THAT(failed.out, Catch::Contains("deploy #2 "));
        CHECK_THAT(failed.out, !Catch::EndsWith("deploy #2 succeeded\n"));
        Ran ready = c.ctl({"health", "--ready"});
        CHECK(ready.code == 1);
        CHECK_THAT(ready.out, Catch::StartsWith("not ready: "));
    }
    c.stop();
}

TEST_CASE("initctl rollback --wait goes back a generation, and one that does not exist is refused", "[control]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    c.save("{\n  webapp = \"1\";\n  webapp2 = \"1\";\n  nginx = \"2\";\n}\n");
    REQUIRE(c.done(2));
    Ran back = c.ctl({"rollback", "--wait"});
    INFO(back.out << back.err);
    CHECK(back.code == 0);
    CHECK_THAT(back.out, Catch::Contains("deploy #3: rollback, asked for by nixproc-initctl\n"));
    CHECK_THAT(back.out, Catch::Contains("deploy #3: -webapp2 ~nginx =webapp\n"));
    CHECK_THAT(back.out, Catch::EndsWith("\ndeploy #3 succeeded\n"));
    CHECK_THAT(c.ctl({"history", "-n", "1"}).out, Catch::Matches(R"(#3  succeeded  rollback  \S+  -webapp2 ~nginx =webapp\n)"));
    Ran missing = c.ctl({"rollback", "--to", "99", "--wait"});
    CHECK(missing.code == 1);
    CHECK(missing.err == "nixproc-initctl: rollback refused: " + c.t / "processes" + " has no generation 99\n");
    c.stop();
}

TEST_CASE("the init reaps orphans and answers probes while 100 clients hang connected", "[control]") {
    TempDir t;
    std::string socket = t / "run/control.sock";
    // The main child waits for a line on its terminal, leaves 2000 orphans to the init, and waits
    // for another line to end.
    Child init(inPidNamespace({initBinary(), "--", "sh", "-c", "read go; " + testkit() + " orphans 2000; read end"}),
               Options{.pty = true, .env = {"NIXPROC_INIT_CONTROL_SOCKET=" + socket}});
    auto ready = initctl({"--socket", socket, "wait-ready", "--timeout", "30"});
    REQUIRE(ready.code == 0);
    std::vector<std::unique_ptr<Silent>> silent;
    for (int i = 0; i < 100; ++i) silent.push_back(std::make_unique<Silent>(socket));
    for (const auto& s : silent) CHECK(s->connected);
    init.send("go\n");
    CHECK(init.expect("orphans 2000 left, zombies 0", 60s));
    // A probe gets in: a connection silent for a second gives way to it.
    Ran live = initctl({"--socket", socket, "health", "--live"});
    INFO(live.err);
    CHECK(live.code == 0);
    Ran status = initctl({"--socket", socket, "status", "--json"});
    CHECK(status.code == 0);
    CHECK_THAT(status.out, Catch::Contains(R"("manager":"none")"));
    CHECK_THAT(status.out, Catch::Matches(R"(.*"orphans_reaped":(\d{4,}).*\n)"));
    Ran human = initctl({"--socket", socket, "status"});
    CHECK_THAT(human.out, Catch::Contains("deployments:  none (a plain init)\n"));
    CHECK_THAT(human.out, Catch::Matches(R"((.|\n)*orphans:      \d{4,} reaped\n)"));
    CHECK(initctl({"--socket", socket, "health"}).out == "ready: running\n");
    // Every silent client is closed, with a line that says why, within the request deadline.
    for (const auto& s : silent) {
        auto said = s->closing(10s);
        REQUIRE(said);
        CHECK_THAT(*said, Catch::StartsWith(R"({"ok":false,"error":")"));
    }
    init.send("end\n");
    CHECK(init.wait(30s) == 0);
}

TEST_CASE("wait-ready waits for the init's socket and readiness, and gives up with the last reason", "[control]") {
    Container c;
    Child waiting({NIXPROC_INITCTL_BIN, "--socket", c.socket, "wait-ready", "--timeout", "60"}); // before the init is there
    c.start();
    CHECK(waiting.wait(60s) == 0);
    CHECK(waiting.outputText() == "ready: deploy #1 succeeded\n");
    c.stop();

    Ran gone = c.ctl({"wait-ready", "--timeout", "0.3"});
    CHECK(gone.code == 1);
    CHECK(gone.err == "nixproc-initctl: not ready after 300 ms: cannot connect to " + c.socket +
                          ": No such file or directory (is nixproc-init running with this control socket?)\n");
}

TEST_CASE("initctl says which socket it cannot reach and why, and exits 3", "[control]") {
    TempDir t;
    Ran missing = initctl({"--socket", t / "none.sock", "status"});
    CHECK(missing.code == 3);
    CHECK(missing.err == "nixproc-initctl: cannot connect to " + t / "none.sock" +
                             ": No such file or directory (is nixproc-init running with this control socket?)\n");
    // A socket nothing listens on (an init killed with SIGKILL).
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string stale = t / "stale.sock";
    std::strcpy(a.sun_path, stale.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(fd);
    Ran refused = initctl({"--socket", stale, "health"});
    CHECK(refused.code == 3);
    CHECK(refused.err == "nixproc-initctl: cannot connect to " + stale +
                             ": Connection refused (is nixproc-init running with this control socket?)\n");
    // The variable, and the configuration's key, name it too.
    Ran env = initctl({"health"}, {"NIXPROC_INIT_CONTROL_SOCKET=" + stale});
    CHECK_THAT(env.err, Catch::Contains("cannot connect to " + stale + ": Connection refused"));
    auto yaml = t.write("init.yaml", "process_manager: supervisord\ncontrol:\n  socket: " + t / "conf.sock" + "\n");
    Ran conf = initctl({"-c", yaml, "health"});
    CHECK(conf.code == 3);
    CHECK_THAT(conf.err, Catch::Contains("cannot connect to " + t / "conf.sock" + ": No such file or directory"));
    auto off = t.write("off.yaml", "process_manager: supervisord\ncontrol:\n  socket: \"\"\n");
    Ran disabled = initctl({"-c", off, "health"});
    CHECK(disabled.code == 3);
    CHECK(disabled.err == "nixproc-initctl: the control socket is off (control.socket is empty in " + off + ")\n");
    Ran usage = initctl({"health", "--wait"});
    CHECK(usage.code == 2);
    CHECK_THAT(usage.err, Catch::StartsWith("nixproc-initctl: --wait is not an option of health\n"));
    Ran count = initctl({"--socket", stale, "history", "-n", "20000"});
    CHECK(count.code == 2);
    CHECK_THAT(count.err, Catch::StartsWith("nixproc-initctl: -n must be a whole number from 1 to 10000, not '20000'\n"));
}

TEST_CASE("a user that is neither root nor the init's cannot ask", "[control]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot run the client as another user");
        SUCCEED("skipped");
        return;
    }
    Container c;
    c.start();
    REQUIRE(c.done(1));
    // The folders let it reach the socket; the socket's mode (0600) is what stops it.
    fs::permissions(c.t.path, fs::perms::others_exec, fs::perm_options::add);
    fs::permissions(c.t / "run", fs::perms::others_exec, fs::perm_options::add);
    CHECK(c.ctl({"status"}).code == 0); // root may
    Child as_nobody({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", NIXPROC_INITCTL_BIN, "--socket", c.socket, "status"});
    CHECK(as_nobody.wait(30s) == 3);
    CHECK(as_nobody.stderrText() == "nixproc-initctl: cannot connect to " + c.socket +
                                        ": Permission denied (only root and the init's user may ask)\n");
    c.stop();
}

TEST_CASE("a request for other work replaces the one waiting behind a deployment, says so, and tells its waiter", "[control]") {
    Container c;
    std::string gate = c.t / "gate";
    Fifo keep(gate);
    c.start({"NIXPROC_STANDIN_GATE=" + gate});
    for (int n = 1; n <= 2; ++n) {
        if (n == 2) c.save(model("2"));
        REQUIRE(c.init->expectLog("deploy #" + std::to_string(n) + " | waiting at the gate"));
        openGate(gate);
        REQUIRE(c.done(n));
    }
    c.save(model("3"));
    REQUIRE(c.init->expectLog("deploy #3 | waiting at the gate"));
    // Behind deploy #3: a rollback someone waits for, then a deployment asked for by someone else.
    Child waiter(withOwnSocket({NIXPROC_INITCTL_BIN, "--socket", c.socket, "rollback", "--to", "1", "--wait"}));
    REQUIRE(c.init->expectLog("deploy #3: still running; a rollback to generation 1 after it"));
    CHECK(c.ctl({"deploy"}).code == 0);
    REQUIRE(c.init->expectLog("a deployment of the model replaces a rollback to generation 1, which was waiting"));
    CHECK(waiter.wait(30s) == 1);
    CHECK_THAT(waiter.stderrText(), Catch::Contains("replaced by a deployment of the model"));
    openGate(gate);
    REQUIRE(c.done(3));
    REQUIRE(c.init->expectLog("deploy #4 | waiting at the gate"));
    openGate(gate);
    REQUIRE(c.done(4));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #4: asked for by nixproc-initctl"));
    CHECK_THAT(c.init->stderrText(), !Catch::Contains("from generation"));
    c.stop();
}

TEST_CASE("initctl fails when its output cannot be written, and a closed stdout is not taken by the socket", "[control]") {
    Container c;
    c.start();
    REQUIRE(c.done(1));
    std::string ctl = std::string(NIXPROC_INITCTL_BIN) + " --socket " + c.socket;
    Child full(withOwnSocket({"sh", "-c", "exec " + ctl + " status >/dev/full"}));
    CHECK(full.wait(30s) == 1);
    CHECK_THAT(full.stderrText(), Catch::Contains("cannot write its output: No space left on device"));
    // Before, the socket became fd 1: the request went out, and --wait's lines went into it.
    Child closed(withOwnSocket({"sh", "-c", "exec " + ctl + " deploy --wait >&-"}));
    CHECK(closed.wait(60s) == 0);
    REQUIRE(c.done(2));
    c.stop();
}
