// The deployment's jobs (check, switch) through the real binary as PID 1: a job's process group
// goes with it, and what a job prints costs the init bounded memory and linear time.
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

std::string nsOf(pid_t pid) {
    std::error_code ec;
    return fs::read_symlink("/proc/" + std::to_string(pid) + "/ns/pid", ec).string();
}

// Host pids and command lines of the processes in `init`'s PID namespace, the init excepted.
std::vector<std::string> othersInNamespace(pid_t init) {
    std::string ns = nsOf(init);
    std::vector<std::string> others;
    DIR* proc = ::opendir("/proc");
    while (dirent* e = ::readdir(proc)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        pid_t pid = std::atoi(e->d_name);
        if (pid == init || nsOf(pid) != ns) continue;
        std::string cmdline = readFile("/proc/" + std::to_string(pid) + "/cmdline");
        for (char& c : cmdline)
            if (c == '\0') c = ' ';
        others.push_back(std::to_string(pid) + ": " + cmdline);
    }
    ::closedir(proc);
    return others;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true; // the init too: ASan's quarantine keeps freed blocks, RSS says nothing
#else
constexpr bool kSanitized = false;
#endif

// Not CHECK_THAT(log, Contains): a failure would print megabytes of log.
bool has(const std::string& log, const std::string& needle) { return log.find(needle) != std::string::npos; }

long statusKb(pid_t pid, const std::string& key) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with(key + ":")) return std::atol(line.c_str() + key.size() + 1);
    return -1;
}

// utime + stime of `pid`, fields 14 and 15 of /proc/PID/stat.
double cpuSeconds(pid_t pid) {
    std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i < 14; ++i) rest >> field;
    long utime = 0, stime = 0;
    rest >> utime >> stime;
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A container like tests/integration/DeployTest.cpp's: sysvinit, a model, a deploy command.
struct Container {
    TempDir t;
    std::string path = t / "etc/nixproc/processes.nix";
    std::unique_ptr<Child> init;
    pid_t pid1 = -1; // the init, as seen from here

    Container() { t.write("etc/nixproc/processes.nix", "{ webapp = \"1\"; }\n"); }

    void start(const std::string& deploy_yaml, const std::string& extra_yaml = "") {
        auto yaml = t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + path + "\nprofile: " + t / "profile" +
                                             "\nstate_dir: " + t / "state" + "\nwatch:\n  debounce_ms: 50\ndeploy:\n" +
                                             deploy_yaml + extra_yaml);
        std::vector<std::string> env{std::string("PATH=") + STANDINS_DIR + ":/usr/sbin:/usr/bin:/sbin:/bin", "DIR=" + t.path};
        init = std::make_unique<Child>(inPidNamespace({initBinary(), "-c", yaml}), Options{.env = env});
        REQUIRE(init->expectLog("sysvinit started"));
        pid1 = namespaceInit(init->pid());
    }

    void stop() {
        REQUIRE(::kill(pid1, SIGTERM) == 0);
        CHECK(init->wait() == 0);
        CHECK_FALSE(has(init->stderrText(), "AddressSanitizer")); // the sanitized build reports there
        CHECK_FALSE(has(init->stderrText(), "runtime error:"));
    }
};

} // namespace

TEST_CASE("a switch past deploy.timeout_s: its whole group is gone when the timeout is reported, nothing of it lands later",
          "[job][deploy]") {
    Container c;
    // The first switch leaves a worker that ignores SIGTERM and would write after the next
    // deployment; later switches just record that they ran.
    c.t.write("switch",
              "#!/bin/sh\n"
              "if [ ! -e \"$DIR/first\" ]; then\n"
              "  : > \"$DIR/first\"\n"
              "  (trap '' TERM; sleep 3; echo late >> \"$DIR/landed\") &\n"
              "  exec sleep 100\n"
              "fi\n"
              "echo second >> \"$DIR/landed\"\n",
              0755);
    c.start("  command: [" + c.t / "switch" + "]\n  check: []\n  timeout_s: 1\n", "shutdown:\n  grace_s: 1\n");
    REQUIRE(c.init->expectLog("deploy #1: timed out"));
    CHECK(othersInNamespace(c.pid1) == std::vector<std::string>{});
    c.t.write("etc/nixproc/processes.nix", "{ webapp = \"2\"; }\n");
    REQUIRE(c.init->expectLog("deploy #2: done"));
    CHECK(othersInNamespace(c.pid1) == std::vector<std::string>{}); // so nothing can write to `landed` any more
    c.stop();
    CHECK(readFile(c.t / "landed") == "second\n");
}

TEST_CASE("a check that exits 0 but leaves a worker in its group: the worker is gone before the switch starts", "[job][deploy]") {
    Container c;
    c.start("  command: [sh, -c, 'ps -o pid=,args= -e | grep -c \"[s]leep 30\" || true']\n"
            "  check: [sh, -c, \"(trap '' TERM; sleep 30) & echo checked\", check]\n");
    REQUIRE(c.init->expectLog("deploy #1: done"));
    CHECK_THAT(c.init->stderrText(), Catch::Contains("deploy #1 | 0")); // the switch saw no worker left
    CHECK(othersInNamespace(c.pid1) == std::vector<std::string>{});
    c.stop();
}

TEST_CASE("the switch of a manager that starts services itself (sysvinit) keeps what it leaves when it succeeds", "[job][deploy]") {
    // nix-processmgmt's rc scripts start daemons with LFS start_daemon, which may still be in the
    // switch's group when it exits: those are the services just deployed, not leftovers.
    Container c;
    // The switch exits only once its background child has exec'd sleep: what the test then sees in
    // the namespace is the service, never a forked shell on its way to becoming it.
    c.start("  command: [sh, -c, \"sleep 30 & until [ \\\"$(cat /proc/$!/comm)\\\" = sleep ]; do :; done; echo switched\"]\n"
            "  check: []\n");
    REQUIRE(c.init->expectLog("deploy #1: done"));
    auto others = othersInNamespace(c.pid1);
    REQUIRE(others.size() == 1);
    CHECK_THAT(others.front(), Catch::EndsWith("sleep 30 "));
    c.stop(); // and at the stop they get SIGTERM like every other process: exit 0, nothing killed
    CHECK_FALSE(has(c.init->stderrText(), "SIGKILL"));
}

TEST_CASE("a check that prints 2 million lines and fails: the last lines are shown and the init's peak RSS stays flat",
          "[job][output]") {
    Container c;
    c.start("  command: [nixproc-sysvinit-switch]\n  check: [sh, -c, 'seq 2000000; exit 1']\n");
    REQUIRE(c.init->expectLog("deploy #1: failed", 120s));
    long peak = statusKb(c.pid1, "VmHWM");
    INFO("the init's peak RSS: " << peak << " KiB");
    CHECK(peak > 0);
    if (!kSanitized) CHECK(peak < 20 * 1024);
    const auto& log = c.init->stderrText();
    CHECK(has(log, "deploy #1 check | … 1999000 earlier lines not kept"));
    CHECK(has(log, "deploy #1 check | 1999001\n"));
    CHECK(has(log, "deploy #1 check | 2000000\n"));
    CHECK(count(log, "deploy #1 check | ") == 1001);
    c.stop();
}

TEST_CASE("a switch that prints a 256 MB line without newline: the init's peak RSS stays flat and its CPU time linear",
          "[job][output]") {
    Container c;
    c.start("  command: [sh, -c, \"head -c 268435456 /dev/zero | tr '\\\\0' x; echo; echo after\"]\n  check: []\n");
    bool done = c.init->expectLog("deploy #1: done", 60s);
    long peak = statusKb(c.pid1, "VmHWM");
    double cpu = cpuSeconds(c.pid1);
    INFO("the init's peak RSS: " << peak << " KiB, CPU time " << cpu << " s");
    REQUIRE(done);
    if (!kSanitized) CHECK(peak < 20 * 1024);
    CHECK(cpu < 5.0);
    const auto& log = c.init->stderrText();
    CHECK(has(log, "xxxx … [line cut at 65536 bytes]\n"));
    CHECK(has(log, "deploy #1 | after\n"));
    c.stop();
}
