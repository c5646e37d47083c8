#include "init/SignalRouter.hpp"
#include "process/Signals.hpp"

#include <catch2/catch.hpp>

using namespace nixproc;

TEST_CASE("signal names round-trip, real-time ones included", "[signals]") {
    for (int sig = 1; sig <= SIGRTMAX; ++sig) {
        if (sig > SIGSYS && sig < SIGRTMIN) continue; // glibc reserves 32 and 33
        INFO(sig);
        CHECK(signalFromName(signalName(sig)) == sig);
    }
    CHECK(signalName(SIGTERM) == "SIGTERM");
    CHECK(signalName(SIGRTMIN + 3) == "SIGRTMIN+3");
    CHECK(signalFromName("term") == SIGTERM);
    CHECK(signalFromName("HUP") == SIGHUP);
    CHECK(signalFromName("9") == SIGKILL);
    CHECK_FALSE(signalFromName("SIGNOPE"));
    CHECK_FALSE(signalFromName("0"));
    CHECK_FALSE(signalFromName("RTMIN+99"));
}

TEST_CASE("SIGCHLD, the faults and the uncatchable are never forwarded", "[signals]") {
    for (int sig : {SIGCHLD, SIGKILL, SIGSTOP, 32, 33, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT})
        CHECK_FALSE(isForwardable(sig));
    for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGCONT, SIGTSTP,
                    SIGTTIN, SIGTTOU, SIGWINCH, SIGURG, SIGRTMIN, SIGRTMAX})
        CHECK(isForwardable(sig));
}

TEST_CASE("routing: reap, shut down, forward, and HUP redeploys only where a deployer listens", "[signals]") {
    RoutingPolicy plain, deploying{.hup_redeploys = true};
    CHECK(routeSignal(SIGCHLD, plain) == SignalAction::Reap);
    for (int sig : {SIGTERM, SIGINT, SIGQUIT}) CHECK(routeSignal(sig, plain) == SignalAction::Shutdown);
    CHECK(routeSignal(SIGHUP, plain) == SignalAction::Forward);
    CHECK(routeSignal(SIGHUP, deploying) == SignalAction::Redeploy);
    CHECK(routeSignal(SIGWINCH, plain) == SignalAction::Forward);
    CHECK(routeSignal(SIGSEGV, plain) == SignalAction::Ignore);
}
