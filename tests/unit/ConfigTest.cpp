#include "config/Config.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
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
