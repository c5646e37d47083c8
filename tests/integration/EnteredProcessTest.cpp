// nixproc-init as PID 1 at shutdown, with a process that entered its PID namespace from outside,
// as `docker exec` and `podman exec` put one there: its parent is outside the namespace, so it is
// no descendant of the init and no SIGCHLD tells of it, yet the kernel SIGKILLs it the moment PID 1
// exits. Found by the container test `test_lifecycle.py stop-exec-term-ignored`.
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <thread>

using namespace harness;

namespace {

std::vector<std::string> init(std::vector<std::string> args) {
    args.insert(args.begin(), initBinary());
    return inPidNamespace(std::move(args));
}

// COMMAND in the PID namespace whose PID 1 is INIT (seen from outside), started the way the
// engines' exec does: nsenter forks it inside the namespace and waits for it from outside.
std::vector<std::string> entered(pid_t init, std::vector<std::string> command) {
    std::vector<std::string> argv{"nsenter", "-t", std::to_string(init), "-p", "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
}

// The main child: ready once the namespace is there, and it stops on SIGTERM (143).
const std::vector<std::string> kMain{"sh", "-c", "echo ready; exec sleep 1000"};

// Whether the one child of `parent` (seen from outside) waits for its standard input: blocked in
// read(0, ...) or, as readline waits, in pselect6(1, {0}, ...) (x86_64's numbers).
bool childWaitsForInput(pid_t parent) {
    auto children = nixproc::childrenOf(parent);
    if (children.size() != 1) return false;
    std::ifstream syscall("/proc/" + std::to_string(children.front()) + "/syscall");
    std::string number, first;
    if (!(syscall >> number >> first)) return false;
    return (number == "0" && first == "0x0") || (number == "270" && first == "0x1");
}

std::vector<std::string> withMain(std::vector<std::string> options) {
    options.push_back("--");
    options.insert(options.end(), kMain.begin(), kMain.end());
    return options;
}

} // namespace

TEST_CASE("at shutdown a process that entered the namespace from outside gets SIGTERM and time to stop", "[pid1][shutdown]") {
    Child c(init(withMain({"-v", "-t", "5"})));
    REQUIRE(c.readLine() == "ready");
    pid_t pid1 = namespaceInit(c.pid());
    // Its loop's sleep gets the SIGTERM too, so the trap runs at once.
    Child e(entered(pid1, {"sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done"}));
    REQUIRE(e.readLine() == "ready");
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait() == 128 + SIGTERM); // the main child's status, as always
    INFO(c.stderrText());
    CHECK(e.readLine(5s) == "got TERM");
    CHECK(e.wait() == 0); // not 128 + SIGKILL: it stopped on its own
    CHECK_THAT(c.stderrText(), Catch::Contains("stopping the processes left behind"));
    CHECK_THAT(c.stderrText(), !Catch::Contains("is over: SIGKILL"));
    CHECK(c.secondsToExit() < 5.0); // it did not wait for the grace once the process was gone
}

TEST_CASE("at shutdown a process that entered the namespace and ignores SIGTERM is killed by the init after its grace", "[pid1][shutdown]") {
    Child c(init(withMain({"-v", "-t", "1"})));
    REQUIRE(c.readLine() == "ready");
    pid_t pid1 = namespaceInit(c.pid());
    // As `docker exec -d NAME sh -c 'trap "" TERM; exec sleep 1000'`: the ignored TERM is inherited by sleep.
    Child e(entered(pid1, {"sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"}));
    REQUIRE(e.readLine() == "ready");
    auto sent = std::chrono::steady_clock::now();
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait() == 128 + SIGTERM);
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
    INFO(c.stderrText());
    CHECK(took >= 1.0); // the grace
    CHECK(e.wait() == 128 + SIGKILL);
    CHECK_THAT(c.stderrText(), Catch::Contains("stopping the processes left behind"));
    CHECK_THAT(c.stderrText(), Catch::Contains("grace of 1 s is over: SIGKILL to everything left"));
}

TEST_CASE("at shutdown an interactive shell entered from outside ends on the SIGHUP that follows the SIGTERM", "[pid1][shutdown]") {
    Child c(init(withMain({"-v", "-t", "5"})));
    REQUIRE(c.readLine() == "ready");
    pid_t pid1 = namespaceInit(c.pid());
    // As `docker exec -it NAME bash` left open: an interactive shell ignores SIGTERM.
    Child e(entered(pid1, {"bash", "--norc", "--noprofile", "-i"}), {.pty = true, .env = {"TERM=dumb", "PS1=ready$ "}});
    REQUIRE(e.expect("ready$ "));
    // bash acts on SIGHUP at once while readline waits for input; just before, it only notes the
    // signal and reads on. Nothing tells when it reads: polled, with a deadline.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!childWaitsForInput(e.pid()) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    REQUIRE(childWaitsForInput(e.pid()));
    REQUIRE(::kill(pid1, SIGTERM) == 0);
    CHECK(c.wait() == 128 + SIGTERM);
    INFO(c.stderrText());
    CHECK(c.secondsToExit() < 4.0); // not the 5 s grace and a SIGKILL
    CHECK(e.wait() == 128 + SIGHUP); // nsenter dies of the signal its child died of
    CHECK_THAT(c.stderrText(), !Catch::Contains("is over: SIGKILL"));
}
