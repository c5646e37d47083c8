// The process managers under nixproc-init as PID 1: real supervisord, real s6-svscan (with
// stand-ins for s6-rc, not packaged for Debian 12: tests/standins/s6-rc*), rc scripts that
// daemonize through the real start-stop-daemon, disnix through a stand-in; and configuration errors.
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

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
           "[supervisorctl]\nserverurl=unix://" + t / "supervisor.sock" + "\n\n"
           "[include]\nfiles=conf.d/*.conf\n";
}

// No model in these tests: nothing is deployed, and nothing is written outside the test's folder.
std::string isolated(const TempDir& t) {
    return "processes: " + t / "nixproc/processes.nix" + "\nstate_dir: " + t / "state" + "\nprofile: " + t / "profile" + "\n";
}

std::string supervisordYaml(const TempDir& t, const std::string& conf) {
    return isolated(t) + "process_manager: supervisord\nmanager:\n  config: " + conf + "\n";
}

} // namespace

TEST_CASE("supervisord runs its programs, and SIGTERM stops everything within the grace, exit 0", "[managers][supervisord]") {
    TempDir t;
    Fifo up(t / "up");
    auto conf = t.write("supervisor/supervisord.conf", supervisordConf(t));
    for (std::string name : {"one", "two"})
        t.write("supervisor/conf.d/" + name + ".conf",
                "[program:" + name + "]\ncommand=sh -c 'echo " + name + " > " + t / "up" + "; exec sleep 1001'\n");
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t, conf))}));
    std::set<std::string> started{up.readLine().value_or("?"), up.readLine().value_or("?")};
    CHECK(started == std::set<std::string>{"one", "two"});
    REQUIRE(c.expectLog("supervisord is ready"));

    REQUIRE(::kill(namespaceInit(c.pid()), SIGHUP) == 0); // means "deploy now", never reaches supervisord
    REQUIRE(c.expectLog("asked for by SIGHUP: " + t / "nixproc/processes.nix does not exist: nothing to deploy"));

    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 0);
    CHECK_THAT(c.stderrText(), Catch::Contains("supervisord (pid 2) exited with status 0"));
    CHECK_THAT(c.stderrText(), !Catch::Contains("SIGKILL"));
    CHECK_THAT(readFile(t / "supervisord.log"), Catch::Contains("stopped: one") && Catch::Contains("stopped: two"));
}

TEST_CASE("supervisord stuck on a program that ignores SIGTERM is killed at the grace", "[managers][supervisord]") {
    TempDir t;
    Fifo up(t / "up");
    auto conf = t.write("supervisor/supervisord.conf", supervisordConf(t));
    t.write("supervisor/conf.d/stubborn.conf", "[program:stubborn]\ncommand=" + testkit() + " stubborn " + t / "up" +
                                                   "\nstopwaitsecs=600\nstdout_logfile=" + t / "stubborn.out\n");
    Child c(init({"-t", "2", "-c", t.write("init.yaml", supervisordYaml(t, conf))}));
    REQUIRE(up.readLine() == "ready");
    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 128 + SIGKILL);
    CHECK(c.secondsToExit() >= 2.0);
    CHECK_THAT(c.stderrText(), Catch::Contains("grace of 2 s is over"));
    CHECK_THAT(readFile(t / "stubborn.out"), Catch::Contains("got 15")); // supervisord did ask it
}

TEST_CASE("s6-rc: s6-svscan supervises, the database deployed last comes up, s6-rc takes it down, the grace bounds a stuck one",
          "[managers][s6]") {
    TempDir t;
    // A database where nixproc-s6-rc-switch leaves it (nixproc-s6-rc-deploy.in:314-337): compiled
    // by s6-rc-compile into STATE/etc/s6/rc/compiled-HASH, with the `compiled` link to it.
    t.write("sv/stubborn/type", "longrun\n");
    t.write("sv/stubborn/run", "#!/bin/sh\nexec " + testkit() + " stubborn\n", 0755);
    t.write("sv/default/type", "bundle\n");
    t.write("sv/default/contents", "stubborn\n");
    std::string rc = t / "var/etc/s6/rc", db = rc + "/compiled-0123456789abcdefghijklmnopqrstuv";
    std::filesystem::create_directories(rc);
    Child compile({std::string(STANDINS_DIR) + "/s6-rc-compile", db, t / "sv"});
    REQUIRE(compile.wait() == 0);
    std::filesystem::create_directory_symlink(db, rc + "/compiled");
    auto yaml = t.write("init.yaml", isolated(t) + "process_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" +
                                         "\nshutdown:\n  grace_s: 3\n");
    Child c(init({"-c", yaml}), {.env = {pathWithStandins(), "NIXPROC_STANDIN_LOG=" + t / "calls"}});
    REQUIRE(c.readLine() == "ready"); // the longrun, through s6-supervise's stdout (the init's)
    REQUIRE(c.expectLog("s6-rc started"));
    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.readLine() == "got 15"); // s6-rc -bDa change: s6-supervise sent SIGTERM
    CHECK(c.wait() == 128 + SIGKILL);  // s6-svscan waited on it for ever: the init's grace ended it
    CHECK_THAT(c.stderrText(), Catch::Contains("grace of 3 s is over"));
    std::string live = t / "var/run/s6-rc", scan = t / "var/run/service";
    CHECK(readFile(t / "calls") == "s6-rc-init -c " + db + " -l " + live + " " + scan + "\ns6-rc -l " + live +
                                        " -u change default\ns6-rc -l " + live + " -bDa change\n");
}

TEST_CASE("s6-rc: a start step that fails is reported, never as started", "[managers][s6]") {
    TempDir t;
    // `compiled` leads to a folder that is no database: s6-rc-init fails, and so does s6-rc.
    std::string rc = t / "var/etc/s6/rc";
    std::filesystem::create_directories(rc + "/compiled-broken");
    std::filesystem::create_directory_symlink(rc + "/compiled-broken", rc + "/compiled");
    auto yaml = t.write("init.yaml", isolated(t) + "process_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" + "\n");
    Child c(init({"-c", yaml}), {.env = {pathWithStandins()}});
    REQUIRE(c.expectLog("s6-rc did not start: 2 of 2 start steps failed", 30s, {"s6-rc started"}));
    CHECK_THAT(c.stderrText(), Catch::Contains("s6-rc-init: exited with status 111"));
    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 0);
    CHECK_THAT(c.stderrText(), !Catch::Contains("s6-rc started"));
}

TEST_CASE("s6-rc: a folder where the live link belongs is left with its files, a warning names it, and s6-rc-init says why it fails",
          "[managers][s6]") {
    TempDir t;
    t.write("sv/web/type", "longrun\n");
    t.write("sv/web/run", "#!/bin/sh\nexec sleep 1001\n", 0755);
    t.write("sv/default/type", "bundle\n");
    t.write("sv/default/contents", "web\n");
    std::string rc = t / "var/etc/s6/rc", db = rc + "/compiled-0123456789abcdefghijklmnopqrstuv";
    std::filesystem::create_directories(rc);
    Child compile({std::string(STANDINS_DIR) + "/s6-rc-compile", db, t / "sv"});
    REQUIRE(compile.wait() == 0);
    std::filesystem::create_directory_symlink(db, rc + "/compiled");
    // s6-rc-init only ever makes RUNTIME/s6-rc a symlink (s6-rc-init.c:116): this folder is someone's.
    std::string live = t / "var/run/s6-rc";
    t.write("var/run/s6-rc/notes.txt", "mine\n");
    auto yaml = t.write("init.yaml", isolated(t) + "process_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" + "\n");
    Child c(init({"-c", yaml}), {.env = {pathWithStandins()}});
    REQUIRE(c.expectLog("s6-rc did not start", 30s, {"s6-rc started"}));
    CHECK_THAT(c.stderrText(), Catch::Contains(live + " is a folder, not the symlink s6-rc-init makes"));
    CHECK_THAT(c.stderrText(), Catch::Contains("s6-rc-init: exited with status 111"));
    CHECK_THAT(c.stderrText(), Catch::Contains("to " + live + ": Is a directory"));
    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 0);
    CHECK(readFile(live + "/notes.txt") == "mine\n");
}

TEST_CASE("s6-rc: a scan folder that another user owns and anyone can write is refused before s6-svscan starts, exit 2",
          "[managers][s6]") {
    TempDir t;
    std::string scan = t / "var/run/service";
    // What the other user planted there would run as root under s6-svscan.
    t.write("var/run/service/planted/run", "#!/bin/sh\ntouch " + t / "planted-ran" + "\nexec sleep 1001\n", 0755);
    REQUIRE(::chmod(scan.c_str(), 0777) == 0);
    REQUIRE(::chown(scan.c_str(), 65534, 65534) == 0);
    auto yaml = t.write("init.yaml", isolated(t) + "process_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" + "\n");
    Child c(init({"-c", yaml}), {.env = {pathWithStandins()}});
    CHECK(c.wait(20s) == 2);
    CHECK_THAT(c.stderrText(), Catch::Contains("s6-rc: scan folder " + scan + ": the folder " + scan + " is owned by uid 65534"));
    CHECK_THAT(c.stderrText(), !Catch::Contains("started s6-rc"));
    CHECK_FALSE(std::filesystem::exists(t / "planted-ran"));
    CHECK(std::filesystem::exists(scan + "/planted/run"));
}

TEST_CASE("sysvinit: rc scripts start in S order, their daemons are adopted, stop runs in reverse", "[managers][sysvinit]") {
    TempDir t;
    for (auto [script, name] : {std::pair{"S10one", "one"}, std::pair{"S20two", "two"}}) {
        std::string pid = t / (std::string(name) + ".pid");
        t.write("profile/etc/rc.d/rc3.d/" + std::string(script),
                "#!/bin/sh\ncase \"$1\" in\n"
                "start) echo start " + std::string(name) + " >> " + t / "order" + "\n"
                "  exec start-stop-daemon --start --background --make-pidfile --pidfile " + pid + " --exec /usr/bin/sleep -- 1001 ;;\n"
                "stop) echo stop " + std::string(name) + " >> " + t / "order" + "\n"
                "  exec start-stop-daemon --stop --pidfile " + pid + " --retry TERM/5 --remove-pidfile ;;\n"
                "esac\n", 0755);
    }
    t.write("profile/etc/rc.d/rc3.d/K10one", "#!/bin/sh\necho never >> " + t / "order" + "\n", 0755);
    auto yaml = t.write("init.yaml", isolated(t) + "process_manager: sysvinit\n");
    Child c(init({"-c", yaml}));
    REQUIRE(c.expectLog("sysvinit started"));
    CHECK(readFile(t / "order") == "start one\nstart two\n");
    auto adopted = nixproc::childrenOf(namespaceInit(c.pid()));
    CHECK(adopted.size() == 2); // the two sleeps, re-parented to PID 1 by start-stop-daemon

    REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
    CHECK(c.wait() == 0);
    CHECK(readFile(t / "order") == "start one\nstart two\nstop two\nstop one\n");
    CHECK_THAT(c.stderrText(), !Catch::Contains("SIGKILL"));
}

namespace {

// Disnix's coordinator profile, where nixproc-init reads it: the test's own folder is bound over
// /nix/var/nix/profiles/per-user in the init's mount namespace.
const std::string kDisnixCoordinator = "/nix/var/nix/profiles/per-user/root/disnix-coordinator/default";

struct DisnixImage {
    TempDir t;
    Fifo up{t / "up"};

    // The coordinator profile: a link to `manifest`, as nix-env leaves it pointing into the store.
    void deploy(const std::string& manifest) const {
        auto file = t.write("store/manifest.xml", manifest);
        std::filesystem::create_directories(t / "per-user/root/disnix-coordinator");
        std::filesystem::create_symlink(file, t / "per-user/root/disnix-coordinator/default");
    }

    // A package as create-process-script.nix makes one (etc/dysnomia/process/NAME) whose process
    // says "up" and, on SIGTERM, "stopped" in the FIFO; in a manifest as generatemanifest.xsl
    // writes it (tests/fixtures/upstream/disnix), mapped to the localhost target.
    std::string manifest(const std::string& version_attribute = " version=\"2\"") const {
        auto process = t.write("sleeper.sh", "#!/bin/sh\nchild=\ntrap 'kill $child; wait $child; echo stopped > " + t / "up" +
                                                 "; exit 0' TERM\nsleep 1003 &\nchild=$!\necho up > " + t / "up" + "\nwait\n",
                               0755);
        t.write("pkg/sleeper/etc/dysnomia/process/sleeper", "process=" + process + "\npidFile=" + t / "sleeper.pid\n");
        return "<?xml version=\"1.0\"?>\n\n  <manifest" + version_attribute +
               "><profiles/><services><service name=\"0f1e\"><name>sleeper</name><pkg>" + t / "pkg/sleeper" +
               "</pkg><type>process</type><dependsOn/><connectsTo/><providesContainers/></service></services>"
               "<infrastructure><target name=\"localhost\"><properties type=\"attrs\"><property name=\"hostname\" "
               "type=\"string\">localhost</property></properties><containers/><system>x86_64-linux</system>"
               "<numOfCores>1</numOfCores><clientInterface>disnix-run-activity</clientInterface><targetProperty>hostname"
               "</targetProperty></target></infrastructure><serviceMappings><mapping><container>process</container>"
               "<service>0f1e</service><target>localhost</target></mapping></serviceMappings><snapshotMappings/></manifest>\n";
    }

    std::unique_ptr<Child> boot() const {
        auto yaml = t.write("init.yaml", "process_manager: disnix\nprocesses: " + t / "nixproc/processes.nix" +
                                             "\nstate_dir: " + t / "state" + "\nbootstrap:\n  channel: \"\"\n");
        return std::make_unique<Child>(
            inPidNamespaceWithBind(t / "per-user", "/nix/var/nix/profiles/per-user", {initBinary(), "-c", yaml}),
            Options{.env = {pathWithStandins(), "NIXPROC_STANDIN_LOG=" + t / "calls"}});
    }
};

} // namespace

TEST_CASE("disnix: the coordinator manifest is activated from an empty one at start and deactivated to it at stop",
          "[managers][disnix]") {
    DisnixImage image;
    image.deploy(image.manifest());
    auto c = image.boot();
    CHECK(image.up.readLine() == "up"); // Dysnomia's process module started it
    REQUIRE(c->expectLog("disnix started"));
    REQUIRE(::kill(namespaceInit(c->pid()), SIGTERM) == 0);
    CHECK(image.up.readLine() == "stopped"); // and the stop step's deactivation stopped it
    CHECK(c->wait() == 0);
    auto empty = image.t / "state/disnix-empty-manifest.xml";
    CHECK(readFile(image.t / "calls") == "disnix-activate -o " + empty + " " + kDisnixCoordinator + "\ndisnix-activate -o " +
                                             kDisnixCoordinator + " " + empty + "\n");
    CHECK_THAT(c->stderrText(), !Catch::Contains("stopping the processes left behind"));
}

TEST_CASE("disnix: a coordinator profile that is not a version 2 manifest is named in the log and nothing is activated",
          "[managers][disnix]") {
    DisnixImage image;
    image.deploy(image.manifest(""));
    auto c = image.boot();
    REQUIRE(c->expectLog("disnix started"));
    CHECK_THAT(c->stderrText(), Catch::Contains("disnix: " + kDisnixCoordinator + " (-> " + image.t / "store/manifest.xml" +
                                                "): not a Disnix manifest"));
    CHECK_THAT(c->stderrText(), Catch::Contains("not activating it"));
    REQUIRE(::kill(namespaceInit(c->pid()), SIGTERM) == 0);
    CHECK(c->wait() == 0);
    CHECK_THAT(c->stderrText(), Catch::Contains("not deactivating it"));
    CHECK_FALSE(std::filesystem::exists(image.t / "calls")); // disnix-activate never ran
}

TEST_CASE("a COMMAND replaces the manager's own command", "[managers]") {
    TempDir t;
    auto conf = t.write("supervisor/supervisord.conf", supervisordConf(t));
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t, conf)), "--", "sh", "-c", "exit 4"}));
    CHECK(c.wait() == 4);
}

TEST_CASE("the configuration check prints the effective configuration and starts nothing", "[managers][config]") {
    TempDir t;
    auto yaml = t.write("init.yaml", "process_manager: s6-rc\ndeploy:\n  timeout_s: 60\n");
    Child c({initBinary(), "-c", yaml, "-t", "3", "--check-config"}, {.env = {"NIXPROC_INIT_WATCH_DEBOUNCE_MS=40"}});
    CHECK(c.wait() == 0);
    auto out = c.outputText();
    CHECK_THAT(out, Catch::Contains("process_manager: s6-rc"));
    CHECK_THAT(out, Catch::Contains("  command: [nixproc-s6-rc-switch]"));
    CHECK_THAT(out, Catch::Contains("  timeout_s: 60"));
    CHECK_THAT(out, Catch::Contains("  debounce_ms: 40"));
    CHECK_THAT(out, Catch::Contains("  grace_s: 3"));
    CHECK(c.stderrText().empty());
}

TEST_CASE("configuration and manager errors: a clear message and no start", "[managers][config]") {
    TempDir t;
    auto run = [&](const std::string& yaml, std::vector<std::string> env = {}) {
        auto c = std::make_unique<Child>(init({"-c", t.write("init.yaml", yaml)}), Options{.env = std::move(env)});
        return std::pair{c->wait(), c->stderrText()};
    };
    auto [code, err] = run("process_manager: supervisord\nwatch:\n  debounce: 5\n");
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(t / "init.yaml:3:3: watch.debounce: unknown key"));

    std::tie(code, err) = run("deploy:\n  timeout_s: soon\n");
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(t / "init.yaml:2:14: deploy.timeout_s: expected a number of seconds, got 'soon'"));

    std::tie(code, err) = run("process_manager: supervisord\n", {"NIXPROC_INIT_SHUTDOWN_GRACE_S=-1"});
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains("environment variable NIXPROC_INIT_SHUTDOWN_GRACE_S: shutdown.grace_s: must be from 0 to 86400 seconds, got -1"));

    std::tie(code, err) = run("process_manager: supervisord\nmanager:\n  config: " + t / "missing.conf" + "\n");
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains("supervisord: manager.config " + t / "missing.conf" + ": no such file"));

    auto conf = t.write("supervisord.conf", supervisordConf(t));
    std::tie(code, err) = run(supervisordYaml(t, conf) + "  command: [no-such-supervisord]\n");
    CHECK(code == 127);
    CHECK_THAT(err, Catch::Contains("supervisord: cannot run no-such-supervisord: No such file or directory"));

    std::tie(code, err) = run("process_manager: s6-rc\nnixproc:\n  state_dir: " + t / "var" + "\n", {"PATH=/usr/bin:/bin"});
    CHECK(code == 127);
    CHECK_THAT(err, Catch::Contains("s6-rc: cannot run s6-rc: No such file or directory"));
}

TEST_CASE("supervisord's %(here)s and %(ENV_X)s in supervisord.conf are expanded where the init reads it", "[managers][supervisord]") {
    // The socket is where supervisord puts it, not at a path spelled with %(...)s: readiness is
    // seen at once instead of after the whole step timeout. A relative path is relative to
    // supervisord's folder (-w), as supervisord reads it.
    struct Case {
        std::string spelled;
        bool env = false;     // NIXPROC_TEST_RUN=<the test's folder>
        bool workdir = false; // -w <the test's folder>
    };
    for (const Case& k : {Case{"%(here)s/supervisor.sock"}, Case{"%(ENV_NIXPROC_TEST_RUN)s/supervisor/supervisor.sock", true},
                          Case{"supervisor/supervisor.sock", false, true}}) {
        DYNAMIC_SECTION(k.spelled) {
            TempDir t;
            std::vector<std::string> extra_env;
            if (k.env) extra_env.push_back("NIXPROC_TEST_RUN=" + t.path);
            auto conf = t.write("supervisor/supervisord.conf",
                                "[unix_http_server]\nfile=" + k.spelled + " ; the control socket\nchmod=0700\n\n"
                                "[supervisord]\nlogfile=%(here)s/supervisord.log\npidfile=%(here)s/supervisord.pid\n\n"
                                "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
                                "[supervisorctl]\nserverurl=unix://%(here)s/supervisor.sock\n\n"
                                "[include]\nfiles=conf.d/*.conf\n");
            auto yaml = t.write("init.yaml", supervisordYaml(t, conf) + "  step_timeout_s: 30\n");
            std::vector<std::string> args{"-c", yaml};
            if (k.workdir) args.insert(args.end(), {"-w", t.path});
            Child c(init(args), {.env = extra_env});
            CHECK(c.expectLog("supervisord is ready (" + t / "supervisor/supervisor.sock answers", 10s));
            CHECK_THAT(c.stderrText(), !Catch::Contains("not ready"));
            CHECK(readFile(t / "supervisor/supervisord.log").size() > 0); // %(here)s for the log too: no --logfile given
            REQUIRE(::kill(namespaceInit(c.pid()), SIGTERM) == 0);
            CHECK(c.wait() == 0);
        }
    }
}

TEST_CASE("a supervisord.conf that is a FIFO stops the start with a clear error, exit 2", "[managers][supervisord][config]") {
    TempDir t;
    std::string conf = t / "supervisord.conf";
    REQUIRE(::mkfifo(conf.c_str(), 0600) == 0); // reading it would wait for a writer for ever
    Child c(init({"-c", t.write("init.yaml", supervisordYaml(t, conf))}));
    CHECK(c.wait(10s) == 2);
    CHECK_THAT(c.stderrText(), Catch::Contains("supervisord: manager.config " + conf + ": is a FIFO, not a regular file"));
}
