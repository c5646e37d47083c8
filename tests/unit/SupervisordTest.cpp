// supervisord as nix-processmgmt's images configure it: readiness from whatever supervisord.conf
// configures (unix socket, inet port, or neither), SUPERVISORD_CONF_DIR as the user set it, and
// which supervisord.conf a bare `supervisorctl` (as the upstream switch runs it) would read.
#include "manager/ProcessManager.hpp"
#include "manager/SupervisordConf.hpp"
#include "process/Signals.hpp"
#include "Scratch.hpp"
#include "LogCapture.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <netinet/in.h>
#include <optional>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cstring>
#include <unistd.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {


// An environment variable set (or unset) for one test, restored after it.
class EnvVar {
public:
    EnvVar(std::string name, const std::optional<std::string>& value) : name_(std::move(name)) {
        if (const char* old = std::getenv(name_.c_str())) old_ = old;
        if (value) ::setenv(name_.c_str(), value->c_str(), 1);
        else ::unsetenv(name_.c_str());
    }
    ~EnvVar() {
        if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
        else ::unsetenv(name_.c_str());
    }
    EnvVar(const EnvVar&) = delete;
    EnvVar& operator=(const EnvVar&) = delete;

private:
    std::string name_;
    std::optional<std::string> old_;
};

std::string write(const std::string& path, const std::string& text, unsigned mode = 0644) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::trunc) << text;
    ::chmod(path.c_str(), mode);
    return path;
}

// supervisord.conf as nix-processmgmt ships it (nixproc/backends/supervisord/supervisord.conf),
// with `port` as given; no [unix_http_server].
std::string upstreamConf(const std::string& port_line) {
    return "[supervisord]\n\n[include]\nfiles=conf.d/*\n\n[inet_http_server]\n" + port_line +
           "\n\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
           "[supervisorctl]\n";
}

std::unique_ptr<ProcessManager> supervisordFor(Config& config, const std::string& conf) {
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = conf;
    config.manager.command = {"/bin/true"}; // check() looks the command up on PATH: one that is there
    return makeProcessManager(config);
}

// A TCP socket listening on 127.0.0.1 at a port the kernel picks.
struct Listener {
    int fd = -1;
    int port = 0;
    explicit Listener(int at = 0) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(at));
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd, 4) == 0);
        socklen_t len = sizeof a;
        REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
        port = ntohs(a.sin_port);
    }
    ~Listener() { ::close(fd); }
};

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
int closedPort() {
    Listener l;
    return l.port;
}

} // namespace

TEST_CASE("supervisord's [inet_http_server] port is read as supervisord reads it, and is what tells it is ready", "[supervisord]") {
    Scratch s;
    EnvVar port_var("NIXPROC_TEST_PORT", "9003");
    struct Case {
        std::string line, connect_to;
    };
    for (const Case& k : {Case{"port = 127.0.0.1:9001", "127.0.0.1:9001"},           // upstream's
                          Case{"port=:9001", "127.0.0.1:9001"},                      // every interface
                          Case{"port = *:9001 ; every interface", "127.0.0.1:9001"}, // a comment after a blank
                          Case{"port = 9002", "127.0.0.1:9002"},                     // a bare port: every interface
                          Case{"PORT: 10.1.2.3:80", "10.1.2.3:80"},                  // another address, as written
                          Case{"port = 0.0.0.0:9001", "127.0.0.1:9001"},             // every interface, spelled out
                          Case{"port = LocalHost:9001", "127.0.0.1:9001"},           // a name, resolved before the loop
                          Case{"port = 127.0.0.1:%(ENV_NIXPROC_TEST_PORT)s", "127.0.0.1:9003"}}) {
        DYNAMIC_SECTION(k.line) {
            Config config;
            auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf", upstreamConf(k.line)));
            LogCapture log;
            REQUIRE_NOTHROW(manager->check()); // it used to exit 2 here: no [unix_http_server]
            auto probe = manager->readiness();
            REQUIRE(probe);
            CHECK(probe->kind != ReadinessProbe::Kind::UnixSocket);
            CHECK(probe->path == k.connect_to);
            CHECK_THAT(log.text(), Catch::Contains("[inet_http_server]") && Catch::Contains(k.connect_to));
        }
    }
}

TEST_CASE("a port supervisord would refuse stops the start with supervisord's reason, exit 2", "[supervisord]") {
    Scratch s;
    for (std::string bad : {"port = 127.0.0.1:", "port = 127.0.0.1:http", "port = 65536", "port = 0", "port ="}) {
        DYNAMIC_SECTION(bad) {
            Config config;
            auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf", upstreamConf(bad)));
            try {
                manager->check();
                FAIL("check() accepted " << bad);
            } catch (const ManagerError& e) {
                CHECK(e.exit_code == 2);
                CHECK_THAT(e.what(), Catch::Contains("[inet_http_server] port"));
            }
        }
    }
}

TEST_CASE("the inet probe answers once something listens on the port, without blocking", "[supervisord]") {
    Scratch s;
    int port = closedPort();
    Config config;
    auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf", upstreamConf("port = 127.0.0.1:" + std::to_string(port))));
    REQUIRE_NOTHROW(manager->check());
    auto probe = manager->readiness();
    REQUIRE(probe);
    auto started = std::chrono::steady_clock::now();
    CHECK_FALSE(probe->ready()); // refused at once
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(100));

    // Something listens there once supervisord has started (check() refuses a port that already
    // answers before: see below). `port = :N` means every interface: probed on 127.0.0.1.
    port = closedPort();
    manager = supervisordFor(config, write(s.dir + "/supervisord.conf", upstreamConf("port = :" + std::to_string(port))));
    REQUIRE_NOTHROW(manager->check());
    probe = manager->readiness();
    REQUIRE(probe);
    Listener listener(port);
    // A loopback handshake is complete when connect returns or at the next look; a few looks at most.
    bool ready = false;
    for (int look = 0; look < 50 && !ready; ++look) ready = probe->ready();
    CHECK(ready);
}

TEST_CASE("the unix socket, when supervisord.conf has one, is still what tells supervisord is ready", "[supervisord]") {
    Scratch s;
    Config config;
    auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf",
                                                "[unix_http_server]\nfile=%(here)s/supervisor.sock\n\n" +
                                                    upstreamConf("port = 127.0.0.1:9001")));
    LogCapture log;
    REQUIRE_NOTHROW(manager->check());
    auto probe = manager->readiness();
    REQUIRE(probe);
    CHECK(probe->kind == ReadinessProbe::Kind::UnixSocket);
    CHECK(probe->path == s.dir + "/supervisor.sock");
    CHECK_THAT(log.text(), Catch::Contains(s.dir + "/supervisor.sock"));
}

TEST_CASE("with neither socket nor port, supervisord is ready a moment after it writes its pidfile, and says so once", "[supervisord]") {
    Scratch s;
    std::string pidfile = s.dir + "/run/supervisord.pid";
    fs::create_directories(s.dir + "/run");
    // A pidfile left by an earlier run of the same container (SIGKILLed: supervisord did not remove it).
    write(pidfile, "4242\n");
    auto an_hour_ago = fs::file_time_type::clock::now() - std::chrono::hours(1);
    fs::last_write_time(pidfile, an_hour_ago);

    Config config;
    auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf",
                                                "[supervisord]\npidfile=%(here)s/run/supervisord.pid\n\n[include]\nfiles=conf.d/*\n"));
    LogCapture log;
    REQUIRE_NOTHROW(manager->check());
    auto probe = manager->readiness();
    REQUIRE(probe);
    CHECK(probe->path == pidfile);
    auto info = log.text();
    CHECK_THAT(info, Catch::Contains("[unix_http_server]") && Catch::Contains("[inet_http_server]") && Catch::Contains(pidfile));
    CHECK(log.text().find(pidfile) == log.text().rfind(pidfile)); // said once

    // The stale one is no sign of life, however long it is looked at.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    bool stale_ready = false;
    while (std::chrono::steady_clock::now() < until && !stale_ready) {
        stale_ready = probe->ready();
        ::usleep(50'000); // a poll: a file's age has no event
    }
    CHECK_FALSE(stale_ready);

    // supervisord writes it (after it opened its servers and set its signals): ready a short while later.
    write(pidfile, "4243\n");
    auto written = std::chrono::steady_clock::now();
    CHECK_FALSE(probe->ready());
    bool ready = false;
    while (!ready && std::chrono::steady_clock::now() - written < std::chrono::seconds(10)) {
        ready = probe->ready();
        if (!ready) ::usleep(50'000);
    }
    CHECK(ready);
    CHECK(std::chrono::steady_clock::now() - written >= std::chrono::milliseconds(500));
}

TEST_CASE("a SUPERVISORD_CONF_DIR the init was given is kept, with a warning when supervisord does not include its conf.d", "[supervisord]") {
    Scratch s;
    std::string conf = write(s.dir + "/etc/supervisor/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
    auto confDirOf = [](const ProcessManager& m) -> std::optional<std::string> {
        for (const auto& kv : m.deployEnvironment())
            if (kv.starts_with("SUPERVISORD_CONF_DIR=")) return kv.substr(std::string("SUPERVISORD_CONF_DIR=").size());
        return std::nullopt;
    };
    auto warnsAboutConfDir = [](const LogCapture& log) { return log.warnings().find("SUPERVISORD_CONF_DIR") != std::string::npos; };

    SECTION("unset: the folder of manager.config, as upstream's image sets it") {
        EnvVar unset("SUPERVISORD_CONF_DIR", std::nullopt);
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        CHECK(confDirOf(*manager) == s.dir + "/etc/supervisor");
        CHECK_FALSE(warnsAboutConfDir(log));
    }
    SECTION("set to that folder, spelled another way: kept, no warning") {
        EnvVar set("SUPERVISORD_CONF_DIR", s.dir + "/etc/./supervisor/");
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        auto kept = confDirOf(*manager);
        CHECK((!kept || *kept == s.dir + "/etc/./supervisor/")); // the inherited value reaches the switch
        CHECK_FALSE(warnsAboutConfDir(log));
    }
    SECTION("set to another folder: kept, and one warning naming both") {
        EnvVar set("SUPERVISORD_CONF_DIR", s.dir + "/elsewhere");
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        auto kept = confDirOf(*manager);
        CHECK((!kept || *kept == s.dir + "/elsewhere"));
        CHECK(warnsAboutConfDir(log));
        CHECK_THAT(log.warnings(), Catch::Contains(s.dir + "/elsewhere") && Catch::Contains(conf));
    }
    SECTION("set to another folder whose conf.d supervisord includes: kept, no warning") {
        EnvVar set("SUPERVISORD_CONF_DIR", s.dir + "/elsewhere");
        std::string including = write(s.dir + "/etc/supervisor/supervisord.conf",
                                      "[supervisord]\n\n[include]\nfiles = other/*.conf " + s.dir +
                                          "/elsewhere/conf.d/*\n\n[inet_http_server]\nport = 127.0.0.1:9001\n");
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, including);
        REQUIRE_NOTHROW(manager->check());
        CHECK_FALSE(warnsAboutConfDir(log));
    }
}

TEST_CASE("a bare supervisorctl that would read another supervisord.conf than manager.config is warned about, naming it", "[supervisord]") {
    // supervisorctl (supervisor 4.2.5, options.py:108-115) looks, without -c, in PREFIX/etc/supervisord.conf
    // and PREFIX/supervisord.conf (PREFIX: two folders up from the supervisorctl that runs) before
    // the working folder's and /etc's: a supervisorctl in the scratch's bin/ finds the scratch's.
    Scratch s;
    write(s.dir + "/bin/supervisorctl", "#!/bin/sh\nexit 0\n", 0755);
    EnvVar path("PATH", s.dir + "/bin:/usr/bin:/bin");
    EnvVar unset("SUPERVISORD_CONF_DIR", std::nullopt);

    SECTION("it finds manager.config itself: no warning") {
        std::string conf = write(s.dir + "/etc/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        CHECK_THAT(log.warnings(), !Catch::Contains("supervisorctl"));
    }
    SECTION("it finds another file first: a warning naming that file and manager.config") {
        std::string other = write(s.dir + "/etc/supervisord.conf", upstreamConf("port = 127.0.0.1:9009"));
        std::string conf = write(s.dir + "/etc/supervisor/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        CHECK_THAT(log.warnings(), Catch::Contains("supervisorctl") && Catch::Contains(other) && Catch::Contains(conf));
    }
    SECTION("no supervisorctl on PATH: a warning saying so") {
        EnvVar no_ctl("PATH", s.dir + "/empty");
        std::string conf = write(s.dir + "/etc/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
        Config config;
        LogCapture log;
        auto manager = supervisordFor(config, conf);
        REQUIRE_NOTHROW(manager->check());
        CHECK_THAT(log.warnings(), Catch::Contains("supervisorctl") && Catch::Contains("PATH"));
    }
}

TEST_CASE("a port that already answers before supervisord starts is refused: it would pass for supervisord", "[supervisord]") {
    Scratch s;
    Listener other; // another supervisord, or another container of the same pod
    Config config;
    auto manager = supervisordFor(config, write(s.dir + "/supervisord.conf",
                                                upstreamConf("port = 127.0.0.1:" + std::to_string(other.port))));
    LogCapture log;
    try {
        manager->check();
        FAIL("check() accepted a port another program holds");
    } catch (const ManagerError& e) {
        CHECK(e.exit_code == 2);
        CHECK_THAT(e.what(), Catch::Contains("127.0.0.1:" + std::to_string(other.port) + " ([inet_http_server] port of " +
                                             s.dir + "/supervisord.conf) already answers before supervisord starts"));
    }
}

TEST_CASE("parseInetPort reads a port as supervisor's inet_address does, and says why it would refuse one", "[supervisord]") {
    struct Good {
        std::string value, host;
        int port;
    };
    for (const Good& k : {Good{"127.0.0.1:9001", "127.0.0.1", 9001}, Good{":9001", "", 9001}, Good{"*:9001", "", 9001},
                          Good{"9001", "", 9001}, Good{"Example.COM:80", "example.com", 80}, Good{"::1:9001", "::1", 9001},
                          Good{"h:+9001", "h", 9001}, Good{"h:9_001", "h", 9001}, Good{"h: 9001 ", "h", 9001},
                          Good{"h:65535", "h", 65535}, Good{"h:1", "h", 1}}) {
        DYNAMIC_SECTION(k.value) {
            InetPort p = parseInetPort(k.value);
            CHECK(p.host == k.host);
            CHECK(p.port == k.port);
        }
    }
    struct Bad {
        std::string value, why;
    };
    for (const Bad& k : {Bad{"127.0.0.1:", "no port number specified"}, Bad{"h:http", "invalid literal for int() with base 10: 'http'"},
                         Bad{"h:0", "0 is below lower bound (1)"}, Bad{"h:-5", "-5 is below lower bound (1)"},
                         Bad{"h:65536", "65536 is above upper bound (65535)"}, Bad{"h:99999999999", "is above upper bound (65535)"},
                         Bad{"h:9__001", "invalid literal"}, Bad{"h:_9001", "invalid literal"}, Bad{"h:9001_", "invalid literal"},
                         Bad{"h:+", "invalid literal"}, Bad{"http", "not a valid port number: 'http'"},
                         Bad{"0", "not a valid port number: '0'"}, Bad{"", "not a valid port number: ''"}}) {
        DYNAMIC_SECTION("refused: " << k.value) {
            try {
                parseInetPort(k.value);
                FAIL("accepted " << k.value);
            } catch (const std::invalid_argument& e) {
                CHECK_THAT(e.what(), Catch::Contains(k.why));
            }
        }
    }
}

TEST_CASE("a bare supervisorctl's search path follows the program's prefix and the working folder", "[supervisord]") {
    using V = std::vector<std::string>;
    CHECK(supervisorctlSearchPaths("/usr/bin/supervisorctl", "/") ==
          V{"/usr/etc/supervisord.conf", "/usr/supervisord.conf", "/supervisord.conf", "/etc/supervisord.conf",
            "/etc/supervisord.conf", "/etc/supervisor/supervisord.conf"});
    // An image's /bin/supervisorctl: the prefix is /.
    CHECK(supervisorctlSearchPaths("/bin/supervisorctl", "/srv")[0] == "/etc/supervisord.conf");
    CHECK(supervisorctlSearchPaths("/bin/supervisorctl", "/srv")[1] == "/supervisord.conf");
    // A bare name (argv[0] without a folder): the prefix is the working folder.
    CHECK(supervisorctlSearchPaths("supervisorctl", "/srv") ==
          V{"/srv/etc/supervisord.conf", "/srv/supervisord.conf", "/srv/supervisord.conf", "/srv/etc/supervisord.conf",
            "/etc/supervisord.conf", "/etc/supervisor/supervisord.conf"});
}

TEST_CASE("bareSupervisorctlWarning names the file a bare supervisorctl reads instead, or says there is none", "[supervisord]") {
    Scratch s;
    std::string config = write(s.dir + "/etc/supervisor/supervisord.conf", "[supervisorctl]\n");
    std::vector<std::string> search{s.dir + "/a/supervisord.conf", s.dir + "/b/supervisord.conf", s.dir + "/c/supervisord.conf"};

    auto none = bareSupervisorctlWarning(config, search);
    REQUIRE(none);
    CHECK_THAT(*none, Catch::Contains("finds no configuration file") && Catch::Contains(search[0]) && Catch::Contains(search[2]) &&
                          Catch::Contains("http://localhost:9001") && Catch::Contains(config));

    // A link to manager.config is manager.config.
    fs::create_directories(s.dir + "/b");
    fs::create_symlink(config, search[1]);
    CHECK_FALSE(bareSupervisorctlWarning(config, search));

    // A broken link does not count (os.path.exists); the first file that exists does.
    fs::create_directories(s.dir + "/a");
    fs::create_symlink(s.dir + "/nowhere.conf", search[0]);
    CHECK_FALSE(bareSupervisorctlWarning(config, search));
    fs::remove(search[0]);
    write(search[0], "[supervisorctl]\nserverurl=unix:///elsewhere.sock\n");
    auto other = bareSupervisorctlWarning(config, search);
    REQUIRE(other);
    CHECK_THAT(*other, Catch::Contains("reads " + search[0] + ", not manager.config " + config));
}

// supervisor 4.2.5 catches TERM, INT, QUIT, HUP, CHLD and USR2 (supervisor/options.py:1252-1259
// setsignals); Python ignores PIPE and XFSZ from its start. Any other signal whose default action
// kills or stops a process would take supervisord, and with it the container, down, where
// supervisord run as PID 1 would never have seen it (the kernel spares a namespace's init).
TEST_CASE("supervisord gets only the signals it has a handler for, and each other one is refused with why", "[supervisord][signals]") {
    Scratch s;
    Config config;
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = write(s.dir + "/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
    auto manager = makeProcessManager(config);
    for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR2, SIGPIPE, SIGXFSZ, SIGWINCH, SIGCONT, SIGURG}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig).empty());
    }
    CHECK(manager->withheld(SIGHUP) == "supervisord restarts every program on SIGHUP");
    for (int sig : {SIGUSR1, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGRTMIN, SIGRTMAX}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig) == "it has no handler for it and would die");
    }
    for (int sig : {SIGSEGV, SIGABRT, SIGXCPU, SIGSYS, SIGTRAP}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig) == "it has no handler for it and would die");
    }
    for (int sig : {SIGTSTP, SIGTTIN, SIGTTOU}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig) == "it has no handler for it and would stop");
    }
}

TEST_CASE("a COMMAND that is not supervisord gets every signal, as any plain init's child would", "[supervisord][signals]") {
    Scratch s;
    Config config;
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = write(s.dir + "/supervisord.conf", upstreamConf("port = 127.0.0.1:9001"));
    for (std::vector<std::string> command : {std::vector<std::string>{"sleep", "600"}, {"bash"}, {"/bin/sh", "-c", "exec supervisord"}}) {
        config.manager.command = command;
        auto manager = makeProcessManager(config);
        INFO(command.front());
        for (int sig : {SIGUSR1, SIGALRM, SIGHUP, SIGTSTP}) CHECK(manager->withheld(sig).empty());
    }
    config.manager.command = {"/nix/store/0123-supervisor-4.2.5/bin/supervisord", "--nodaemon"};
    CHECK(makeProcessManager(config)->withheld(SIGUSR1) == "it has no handler for it and would die");
}

// What the init makes of a main child that replaces supervisord's own command.
TEST_CASE("a COMMAND is supervisord, a shell that does not start it, or another program", "[supervisord][command]") {
    Scratch s;
    Config config;
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = write(s.dir + "/supervisord.conf", "[unix_http_server]\nfile=/var/run/supervisor.sock\n");
    auto role = [&](std::vector<std::string> command) {
        config.manager.command = std::move(command);
        return makeProcessManager(config)->commandRole();
    };
    CHECK(role({}) == CommandRole::Manager);
    CHECK(role({"supervisord", "--nodaemon", "-c", "/etc/supervisor/supervisord.conf"}) == CommandRole::Manager);
    CHECK(role({"/usr/bin/supervisord"}) == CommandRole::Manager);
    CHECK(role({"bash"}) == CommandRole::Shell);
    CHECK(role({"/bin/sh", "-l"}) == CommandRole::Shell);
    CHECK(role({"bash", "-c", "echo hello; sleep 8"}) == CommandRole::Shell);
    CHECK(role({"sh", "-ec", "ls /etc"}) == CommandRole::Shell);
    CHECK(role({"sh", "-c", "mkdir -p /var/log/x && exec supervisord --nodaemon"}) == CommandRole::Other); // a wrapper
    CHECK(role({"sh", "/entrypoint.sh"}) == CommandRole::Other); // a script: what it runs is unknown
    CHECK(role({"sleep", "600"}) == CommandRole::Other);
    CHECK(role({"/usr/local/bin/my-supervisor"}) == CommandRole::Other);
}

TEST_CASE("a COMMAND that replaces supervisord is said once, with what the init still does and how to have a plain shell",
          "[supervisord][command]") {
    Scratch s;
    Config config;
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = write(s.dir + "/supervisord.conf", "[unix_http_server]\nfile=/var/run/supervisor.sock\n");
    config.manager.command = {"sleep", "600"};
    auto manager = makeProcessManager(config);
    CHECK(replacedCommandNotice(*manager, "COMMAND") ==
          "COMMAND sleep replaces supervisord's command: nixproc-init still waits for /var/run/supervisor.sock and deploys; "
          "for a plain shell use --entrypoint or NIXPROC_INIT_PROCESS_MANAGER=none");
    config.manager.command = {"bash"};
    manager = makeProcessManager(config);
    CHECK(replacedCommandNotice(*manager, "COMMAND") ==
          "COMMAND bash replaces supervisord's command and is a shell that does not start supervisord: nixproc-init runs it "
          "as a plain init (no wait for /var/run/supervisor.sock, no deployments, every signal passed on); to deploy, "
          "leave the COMMAND out, or start supervisord from it");
    config.manager.command = {};
    CHECK(replacedCommandNotice(*makeProcessManager(config), "COMMAND").empty());
}

namespace {
void onSignal(int) {}
} // namespace

TEST_CASE("a socket that answers is no ready supervisord until supervisord catches the signals it handles", "[supervisord][signals]") {
    Scratch s;
    Config config;
    config.process_manager = ManagerKind::Supervisord;
    config.manager.config = write(s.dir + "/supervisord.conf", "[unix_http_server]\nfile=%(here)s/supervisor.sock\n\n[include]\nfiles=conf.d/*\n");
    // supervisord itself as the command (whatever its folder), not a wrapper that may catch otherwise.
    config.manager.command = {write(s.dir + "/bin/supervisord", "#!/bin/sh\n", 0755)};
    auto manager = makeProcessManager(config);
    REQUIRE_NOTHROW(manager->check());
    auto probe = manager->readiness();
    REQUIRE(probe);
    CHECK(probe->catches == std::vector<int>{SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR2});

    // The socket listens (as after supervisord's openhttpservers), in a child that has not yet
    // installed its handlers (setsignals comes next); it installs them when told on `go`.
    int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, probe->path.c_str());
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener, 4) == 0);
    int go[2], done[2];
    REQUIRE(::pipe(go) == 0);
    REQUIRE(::pipe(done) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        char c;
        if (::read(go[0], &c, 1) != 1) ::_exit(1);
        for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR2}) std::signal(sig, onSignal);
        if (::write(done[1], "x", 1) != 1) ::_exit(1);
        ::pause();
        ::_exit(0);
    }
    probe->pid = child;
    CHECK_FALSE(probe->ready());
    REQUIRE(::write(go[1], "x", 1) == 1);
    char c;
    REQUIRE(::read(done[0], &c, 1) == 1);
    CHECK(probe->ready());
    CHECK_FALSE(catchesSignals(child, {SIGUSR1}));

    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    for (int fd : {listener, go[0], go[1], done[0], done[1]}) ::close(fd);
}
