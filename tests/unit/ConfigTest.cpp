#include "config/Config.hpp"

#include "Scratch.hpp"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <sys/stat.h>
#include <unistd.h>

using namespace nixproc;
using namespace std::chrono_literals;

namespace {

struct YamlFile {
    std::string path = std::filesystem::temp_directory_path() / ("nixproc-config-" + std::to_string(::getpid()) + ".yaml");
    explicit YamlFile(const std::string& text) { std::ofstream(path) << text; }
    ~YamlFile() { std::filesystem::remove(path); }
};

Config load(const std::string& yaml, std::map<std::string, std::string> env = {}, std::vector<std::string> args = {}) {
    YamlFile f(yaml);
    args.insert(args.begin(), {"-c", f.path});
    return loadConfig(parseCommandLine(args), env);
}

std::string errorOf(const std::string& yaml, std::map<std::string, std::string> env = {}) {
    YamlFile f(yaml);
    try {
        loadConfig(parseCommandLine({"-c", f.path}), env);
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        if (msg.starts_with(f.path)) return msg.substr(f.path.size() + 1); // without the temporary file's name
        return msg;
    }
    return "no error";
}

} // namespace

TEST_CASE("the shipped config/init.yaml says exactly the defaults of a configured image", "[config]") {
    auto shipped = loadConfig(parseCommandLine({"-c", SOURCE_DIR "/config/init.yaml"}), {});
    auto defaults = load("");
    CHECK(renderConfig(shipped) == renderConfig(defaults));
    CHECK(defaults.process_manager == ManagerKind::Supervisord);
    CHECK(defaults.deployCommand() == std::vector<std::string>{"nixproc-supervisord-switch"});
}

TEST_CASE("without a file it is a plain init that needs a command", "[config]") {
    CHECK_THROWS_WITH(loadConfig(parseCommandLine({"-c", "/no/such.yaml"}), {}), Catch::Contains("/no/such.yaml: cannot be read"));
    auto plain = loadConfig(parseCommandLine({"true"}), {});
    CHECK(plain.process_manager == ManagerKind::None);
    CHECK(plain.manager.command == std::vector<std::string>{"true"});
}

TEST_CASE("precedence: file, then environment, then command line", "[config]") {
    auto c = load("shutdown:\n  grace_s: 5\ndeploy:\n  timeout_s: 60\nprocesses: /a/processes.nix\n",
                  {{"NIXPROC_INIT_SHUTDOWN_GRACE_S", "6"}, {"NIXPROC_PROCESSES", "/b/processes.nix"}},
                  {"-t", "7", "-v"});
    CHECK(c.shutdown.grace == 7s);
    CHECK(c.deploy.timeout == 60s);
    CHECK(c.processes == "/b/processes.nix");
    CHECK(c.log.level == "debug");
    auto e = load("", {{"NIXPROC_INIT_PROCESSES", "/c/p.nix"}, {"NIXPROC_PROCESSES", "/b/p.nix"},
                       {"NIXPROC_INIT_DEPLOY_COMMAND", "[my-switch, --fast]"}, {"NIXPROC_INIT_PROCESS_MANAGER", "s6-rc"}});
    CHECK(e.processes == "/c/p.nix");
    CHECK(e.deploy.command == std::vector<std::string>{"my-switch", "--fast"});
    CHECK(e.deployCommand() == std::vector<std::string>{"my-switch", "--fast"});
    CHECK(load("process_manager: sysvinit\n").deployCommand() == std::vector<std::string>{"nixproc-sysvinit-switch"});
}

TEST_CASE("what --check-config prints is read back to the same configuration", "[config]") {
    auto c = load("process_manager: s6-rc\nwatch:\n  extra: [ids.nix]\n  debounce_ms: 10\nlog:\n  format: json\n");
    CHECK(renderConfig(load(renderConfig(c))) == renderConfig(c));
}

TEST_CASE("errors name line, column and key", "[config]") {
    CHECK(errorOf("deploy:\n  timeoutt: 5\n") == "2:3: deploy.timeoutt: unknown key");
    CHECK(errorOf("frobnicate: 1\n") == "1:1: frobnicate: unknown key");
    CHECK(errorOf("watch: 5\n") == "1:1: watch: expected a mapping of keys");
    CHECK(errorOf("watch:\n  enabled: maybe\n") == "2:12: watch.enabled: expected true or false, got 'maybe'");
    CHECK(errorOf("watch:\n  debounce_ms: 1.5\n") == "2:16: watch.debounce_ms: expected a whole number of milliseconds, got 1.5");
    CHECK(errorOf("watch:\n  debounce_ms: 99999\n") == "2:16: watch.debounce_ms: must be from 0 to 60000 milliseconds, got 99999");
    CHECK(errorOf("watch:\n  extra: [../x.nix]\n") == "2:10: watch.extra: '../x.nix' must be a file name in the model's folder");
    CHECK(errorOf("deploy:\n  command: nixproc-switch\n") == "2:12: deploy.command: expected a list such as [program, argument], one word per item");
    CHECK(errorOf("deploy:\n  command: []\n") == "2:12: deploy.command: must not be empty");
    CHECK(errorOf("deploy:\n  on_boot: sometimes\n") == "2:12: deploy.on_boot: must be one of first | changed | always | never, got 'sometimes'");
    CHECK(errorOf("state_dir: var/lib\n") == "1:12: state_dir: expected an absolute path, got 'var/lib'");
    CHECK(errorOf("manager:\n  runlevel: 7\n") == "2:13: manager.runlevel: must be from 0 to 6 (runlevel), got 7");
    CHECK(errorOf("log:\n  level: loud\n") == "2:10: log.level: must be one of trace | debug | info | warn | error, got 'loud'");
    CHECK(errorOf("processes: [a, b]\n") == "1:12: processes: expected a single value, not a list");
    CHECK(errorOf("- a\n- b\n") == "1:1: expected a mapping of keys");
    CHECK(errorOf("a: [\n") == "2:1: not valid YAML: end of sequence flow not found");
    CHECK(errorOf("deploy:\n  timeout_s: 5\ndeploy:\n  on_boot: never\n") == "3:1: deploy: given twice (first on line 1)");
    CHECK(errorOf("watch:\n  enabled: true\n  enabled: false\n") == "3:3: watch.enabled: given twice (first on line 2)");
}

TEST_CASE("environment errors name the variable and the key", "[config]") {
    CHECK(errorOf("", {{"NIXPROC_INIT_DEPLOY_TIMEOUTS", "5"}}) == "environment variable NIXPROC_INIT_DEPLOY_TIMEOUTS: no such configuration key");
    CHECK(errorOf("", {{"NIXPROC_INIT_WATCH_ENABLED", "perhaps"}}) ==
          "environment variable NIXPROC_INIT_WATCH_ENABLED: watch.enabled: expected true or false, got 'perhaps'");
    CHECK(errorOf("", {{"NIXPROC_PROCESSES", "relative.nix"}}) == "environment variable NIXPROC_PROCESSES: processes: expected an absolute path, got 'relative.nix'");
}

namespace {

// The message of the ConfigError that loading `yaml` raises, "no error" when it loads, or what
// else escaped: anything but a ConfigError is a bug (it would abort the init with status 134).
std::string outcomeOf(const std::string& yaml) {
    YamlFile f(yaml);
    try {
        loadConfig(parseCommandLine({"-c", f.path}), {});
        return "no error";
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        return msg.starts_with(f.path + ":") ? msg.substr(f.path.size() + 1) : "without the file: " + msg;
    } catch (const std::exception& e) {
        return std::string("not a ConfigError: ") + e.what();
    }
}

} // namespace

TEST_CASE("a key that is not a name is an error at its place, not an abort", "[config]") {
    CHECK(outcomeOf("[a]: 1\n") == "1:1: a key must be a name, not a list");
    CHECK(outcomeOf("{a: 1}: 1\n") == "1:1: a key must be a name, not a mapping");
    CHECK(outcomeOf("~: 1\n") == "1:1: a key must be a name, not empty");
    CHECK(outcomeOf("watch:\n  [enabled]: true\n") == "2:3: watch: a key must be a name, not a list");
    CHECK(outcomeOf("? [a, b]\n: 1\n") == "1:3: a key must be a name, not a list");
}

TEST_CASE("a folder, a FIFO or a device as the configuration is refused at once, naming the file", "[config]") {
    Scratch s;
    std::string fifo = s.dir + "/init.yaml";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Hold the FIFO's write end: a loader that opens it anyway then blocks in read() until we
    // close it (below, after the deadline), instead of blocking this test forever.
    int writer = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(writer >= 0);
    REQUIRE(::write(writer, "process_manager: none\n", 22) == 22);
    auto loading = std::async(std::launch::async, [&] {
        try {
            loadConfig(parseCommandLine({"-c", fifo}), {});
            return std::string("no error");
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
    });
    bool answered = loading.wait_for(5s) == std::future_status::ready;
    ::close(writer);
    CHECK(answered);
    CHECK(loading.get() == fifo + ": is a FIFO, not a regular file");

    CHECK_THROWS_WITH(loadConfig(parseCommandLine({"-c", s.dir}), {}),
                      Catch::StartsWith(s.dir + ": is a folder, not a regular file") &&
                          Catch::Contains("a bind mount of a file that is missing on the host"));
    CHECK_THROWS_WITH(loadConfig(parseCommandLine({"-c", "/dev/zero"}), {}),
                      "/dev/zero: is a character device, not a regular file");
    CHECK_THROWS_WITH(loadConfig(parseCommandLine({"-c", "/no/such.yaml"}), {}),
                      "/no/such.yaml: cannot be read: No such file or directory");
}

TEST_CASE("a file that is not UTF-8 YAML text is refused at the first bad byte", "[config]") {
    CHECK(outcomeOf("processes: /a\xff\n") == "1:14: not UTF-8 text (byte 0xff)");
    CHECK(outcomeOf("log:\n  level: \xc3\n") == "2:10: not UTF-8 text (byte 0xc3)");
    CHECK(outcomeOf("\xff\xfep\0r\0") == "1:1: not UTF-8 text (byte 0xff)"); // UTF-16
    CHECK(outcomeOf(std::string("processes: /a\0b\n", 16)) == "1:14: a control character (0x00) is not allowed in YAML");
    CHECK(outcomeOf("processes: /a\x1b[2J\n") == "1:14: a control character (0x1b) is not allowed in YAML");
    CHECK(outcomeOf("processes: /a\x7f\n") == "1:14: a control character (0x7f) is not allowed in YAML");
    CHECK(outcomeOf("processes: /\xc2\x9b\n") == "1:13: a control character (U+009B) is not allowed in YAML");
    CHECK(outcomeOf("processes: /\xed\xa0\x80\n") == "1:13: not UTF-8 text (byte 0xed)"); // a UTF-16 surrogate
    CHECK(outcomeOf("processes: /\xc0\xaf\n") == "1:13: not UTF-8 text (byte 0xc0)");     // overlong '/'
    // Tabs, CR LF line ends and characters beyond ASCII are text.
    CHECK(outcomeOf("processes: /caf\xc3\xa9/p.nix\r\nlog:\r\n  level:\tinfo\r\n") == "no error");
}

TEST_CASE("a UTF-8 byte order mark is allowed, and the columns after it are the editor's", "[config]") {
    CHECK(load("\xEF\xBB\xBFprocess_manager: s6-rc\n").process_manager == ManagerKind::S6Rc);
    CHECK(outcomeOf("\xEF\xBB\xBF" "frobnicate: 1\n") == "1:1: frobnicate: unknown key");
    CHECK(outcomeOf("\xEF\xBB\xBF" "state_dir: x\n") == "1:12: state_dir: expected an absolute path, got 'x'");
}

TEST_CASE("anchors, aliases and tags load or fail with the place, never otherwise", "[config]") {
    auto c = load("deploy:\n  check: &argv [my-check, --strict]\n  command: *argv\n");
    CHECK(c.deploy.command == std::vector<std::string>{"my-check", "--strict"});
    CHECK(load("processes: !!str /a/p.nix\n").processes == "/a/p.nix");
    CHECK(outcomeOf("processes: *nowhere\n") == "1:12: not valid YAML: the referenced anchor is not defined");
    CHECK(outcomeOf("deploy: &d\n  command: *d\n") == "1:9: deploy.command: expected a list such as [program, argument], one word per item");
    CHECK(outcomeOf("watch: &w {extra: [a]}\ndeploy: *w\n") == "1:12: deploy.extra: unknown key");
    // An alias is the anchored node itself: yaml-cpp keeps no place of its own for it.
    CHECK(outcomeOf("&k process_manager: s6-rc\n*k : none\n") == "1:1: process_manager: given twice (first on line 1)");
    CHECK(outcomeOf("<<: {process_manager: none}\n") == "1:1: <<: unknown key"); // no merge keys in yaml-cpp
    CHECK(outcomeOf("log:\n  level: !custom debug\n").starts_with("no error"));
}

TEST_CASE("deep nesting and oversized values end in an error that fits on a line", "[config]") {
    CHECK(outcomeOf(std::string(100000, '[')) == "1:1: not valid YAML: nested too deeply");
    std::string deep;
    for (int i = 0; i < 1500; ++i) deep += std::string(static_cast<std::size_t>(i), ' ') + "a:\n";
    CHECK_THAT(outcomeOf(deep), Catch::Matches("[0-9]+:[0-9]+: (not valid YAML: .*|a: unknown key)"));
    auto long_value = outcomeOf("state_dir: " + std::string(100000, 'x') + "\n");
    CHECK_THAT(long_value, Catch::StartsWith("1:12: state_dir: expected an absolute path, got 'xxxx"));
    CHECK(long_value.size() < 300);
    auto long_key = outcomeOf(std::string(1000, 'k') + ": 1\n"); // YAML allows 1024 characters
    CHECK_THAT(long_key, Catch::StartsWith("1:1: kkkk") && Catch::EndsWith(": unknown key"));
    CHECK(long_key.size() < 300);
}

TEST_CASE("an empty value is reported where its key is", "[config]") {
    CHECK(outcomeOf("processes:\nlog:\n  level: info\n") == "1:1: processes: expected a single value, got nothing");
    CHECK(outcomeOf("deploy:\n  command:\n") == "2:3: deploy.command: expected a list such as [program, argument], one word per item");
}

TEST_CASE("bad environment values are errors naming the variable, whatever their bytes", "[config]") {
    CHECK(errorOf("", {{"NIXPROC_INIT_PROCESSES", "/a\xff"}}) == "environment variable NIXPROC_INIT_PROCESSES: processes: not UTF-8 text (byte 0xff at column 3)");
    CHECK(errorOf("", {{"NIXPROC_INIT_DEPLOY_COMMAND", "[a, [b]]"}}) ==
          "environment variable NIXPROC_INIT_DEPLOY_COMMAND: deploy.command: every item of the list must be a single word");
    CHECK(errorOf("", {{"NIXPROC_INIT_DEPLOY_COMMAND", std::string(100000, '[')}}) ==
          "environment variable NIXPROC_INIT_DEPLOY_COMMAND: deploy.command: not a valid value: nested too deeply");
    CHECK(errorOf("", {{"NIXPROC_INIT_LOG_LEVEL", "*x"}}) ==
          "environment variable NIXPROC_INIT_LOG_LEVEL: log.level: not a valid value: the referenced anchor is not defined");
}

TEST_CASE("what --check-config prints of odd bytes in a value is read back, as valid YAML", "[config]") {
    // Found by tests/fuzz: yaml-cpp's emitter writes DEL and bytes that are not UTF-8 raw.
    auto c = load("deploy:\n  check: [\"x\\x7f\", \"\\e[2J\"]\n", {}, {"--", "prog\xff", "caf\xc3\xa9"});
    CHECK(c.deploy.check == std::vector<std::string>{"x\x7f", "\x1b[2J"});
    std::string printed = renderConfig(c);
    CHECK_THAT(printed, Catch::Contains("check: [\"x\\x7f\", \"\\x1b[2J\"]"));
    CHECK_THAT(printed, Catch::Contains("command: [\"prog\\ufffd\", café]"));
    auto again = load(printed);
    CHECK(again.deploy.check == c.deploy.check);
    CHECK(again.manager.command == std::vector<std::string>{"prog\xef\xbf\xbd", "caf\xc3\xa9"});
    CHECK(renderConfig(again) == printed);
}

TEST_CASE("upstream's channel, state and runtime folders are the defaults", "[config]") {
    auto c = load("");
    CHECK(c.bootstrap.channel == "https://nixos.org/channels/nixpkgs-unstable"); // steps/bootstrap-init.nix:6
    CHECK(c.nixproc.state_dir == "/var");
    CHECK(c.runtimeDir() == "/var/run");
    CHECK_FALSE(c.nixproc.force_disable_user_change);
    CHECK(c.profile == "/nix/var/nix/profiles/processes");
    CHECK(load("nixproc:\n  state_dir: /srv\n").runtimeDir() == "/srv/run"); // nixproc-init-state's default
    CHECK(load("nixproc:\n  state_dir: /srv\n  runtime_dir: /run\n").runtimeDir() == "/run");
    CHECK(load("bootstrap:\n  channel: ''\n").bootstrap.channel.empty());
}

TEST_CASE("the nixproc tools' variables set the nixproc section, and NIXPROC_INIT_ ones override them", "[config]") {
    auto c = load("nixproc:\n  state_dir: /file\n",
                  {{"NIXPROC_STATE_DIR", "/env"}, {"NIXPROC_RUNTIME_DIR", "/env/rt"}, {"NIXPROC_FORCE_DISABLE_USER_CHANGE", "1"}});
    CHECK(c.nixproc.state_dir == "/env");
    CHECK(c.runtimeDir() == "/env/rt");
    CHECK(c.nixproc.force_disable_user_change);
    CHECK(load("", {{"NIXPROC_STATE_DIR", "/env"}, {"NIXPROC_INIT_NIXPROC_STATE_DIR", "/init"}}).nixproc.state_dir == "/init");
    CHECK_FALSE(load("", {{"NIXPROC_FORCE_DISABLE_USER_CHANGE", "0"}}).nixproc.force_disable_user_change);
    CHECK_THAT(errorOf("", {{"NIXPROC_STATE_DIR", "relative"}}), Catch::StartsWith("environment variable NIXPROC_STATE_DIR: nixproc.state_dir: expected an absolute path"));
}

TEST_CASE("disnix's profile is its coordinator profile, and another one is refused", "[config]") {
    CHECK(load("process_manager: disnix\n").profile == "/nix/var/nix/profiles/per-user/root/disnix-coordinator/default");
    CHECK(load("process_manager: disnix\nprofile: /nix/var/nix/profiles/per-user/root/disnix-coordinator/default\n").profile ==
          "/nix/var/nix/profiles/per-user/root/disnix-coordinator/default");
    CHECK_THAT(errorOf("process_manager: disnix\nprofile: /nix/var/nix/profiles/processes\n"),
               Catch::Contains("profile: disnix deploys to its coordinator profile") && Catch::Contains("leave profile unset"));
}

TEST_CASE("keys that were removed say what replaced them", "[config]") {
    CHECK_THAT(errorOf("manager:\n  scan_dir: /run/service\n"),
               Catch::StartsWith("2:3: manager.scan_dir: no longer a key") && Catch::Contains("nixproc.runtime_dir"));
    CHECK_THAT(errorOf("", {{"NIXPROC_INIT_MANAGER_LIVE_DIR", "/run/s6-rc"}}),
               Catch::StartsWith("environment variable NIXPROC_INIT_MANAGER_LIVE_DIR: no longer a key"));
}

// yaml-cpp's Load reads the first document of a stream and drops the others without a word: a
// setting in a second document would be silently ignored.
TEST_CASE("a second YAML document is refused at the line where it starts", "[config]") {
    CHECK(outcomeOf("---\nprocess_manager: supervisord\n---\nprocess_manager: none\n") ==
          "3:1: a second YAML document starts here: nixproc-init reads one (remove the `---` line, or merge the documents)");
    CHECK(outcomeOf("process_manager: s6-rc\n---\ndeploy:\n  timeout_s: 5\n") ==
          "2:1: a second YAML document starts here: nixproc-init reads one (remove the `---` line, or merge the documents)");
    CHECK(outcomeOf("process_manager: s6-rc\n...\nprocess_manager: none\n") ==
          "3:1: a second YAML document starts here: nixproc-init reads one (remove the `---` line, or merge the documents)");
    CHECK(outcomeOf("---\nprocess_manager: s6-rc\n") == "no error");          // one document, started explicitly
    CHECK(outcomeOf("process_manager: s6-rc\n...\n") == "no error");          // one document, ended explicitly
    CHECK(outcomeOf("# only a comment\n---\n# and another\n") == "no error"); // still one (empty) document
    CHECK(errorOf("", {{"NIXPROC_INIT_MANAGER_COMMAND", "[a]\n---\n[b]"}}) ==
          "environment variable NIXPROC_INIT_MANAGER_COMMAND: manager.command: not a valid value: a second YAML document starts at line 2");
}

TEST_CASE("rollback on failure, housekeeping and the control socket are configured like every other key", "[config]") {
    auto d = load("process_manager: supervisord\n");
    CHECK(d.deploy.on_failure == OnFailure::Keep);
    CHECK_FALSE(d.gc.enabled());
    CHECK(d.control.socket == "/run/nixproc-init/control.sock");
    auto c = load("process_manager: supervisord\ndeploy:\n  on_failure: rollback\ngc:\n  keep_generations: 5\n"
                  "  collect_after_deployments: 10\n  collect_every_h: 0.5\ncontrol:\n  socket: /run/x.sock\n");
    CHECK(c.deploy.on_failure == OnFailure::Rollback);
    CHECK(c.gc.keep_generations == 5);
    CHECK(c.gc.collect_after_deployments == 10);
    CHECK(c.gc.collect_every == std::chrono::seconds(1800));
    CHECK(c.gc.enabled());
    CHECK(c.control.socket == "/run/x.sock");
    CHECK(load("process_manager: supervisord\n", {{"NIXPROC_INIT_CONTROL_SOCKET", ""}}).control.socket.empty());
    CHECK_THROWS_WITH(load("process_manager: supervisord\ncontrol:\n  socket: run/x.sock\n"),
                      Catch::Contains(":3:") && Catch::Contains("control.socket") && Catch::Contains("absolute path"));
    CHECK_THROWS_WITH(load("process_manager: supervisord\ndeploy:\n  on_failure: retry\n"),
                      Catch::Contains("deploy.on_failure") && Catch::Contains("keep") && Catch::Contains("rollback"));
}
