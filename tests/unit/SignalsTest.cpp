#include "init/SignalRouter.hpp"
#include "process/Signals.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

TEST_CASE("SIGCHLD and the uncatchable are never forwarded, every other signal may be", "[signals]") {
    for (int sig : {SIGCHLD, SIGKILL, SIGSTOP, 32, 33, 0, SIGRTMAX + 1})
        CHECK_FALSE(isForwardable(sig));
    for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGCONT, SIGTSTP,
                    SIGTTIN, SIGTTOU, SIGWINCH, SIGURG, SIGRTMIN, SIGRTMAX, SIGSEGV, SIGBUS, SIGFPE, SIGILL,
                    SIGTRAP, SIGSYS, SIGABRT})
        CHECK(isForwardable(sig));
}

TEST_CASE("routing: reap, shut down, forward, and HUP redeploys only where a deployer listens", "[signals]") {
    RoutingPolicy plain, deploying{.hup_redeploys = true};
    auto sent = [](int sig) { return ReceivedSignal{.signo = sig, .sender = 42, .code = SI_USER}; };
    CHECK(routeSignal(sent(SIGCHLD), plain) == SignalAction::Reap);
    for (int sig : {SIGTERM, SIGINT, SIGQUIT}) CHECK(routeSignal(sent(sig), plain) == SignalAction::Shutdown);
    CHECK(routeSignal(sent(SIGHUP), plain) == SignalAction::Forward);
    CHECK(routeSignal(sent(SIGHUP), deploying) == SignalAction::Redeploy);
    CHECK(routeSignal(sent(SIGWINCH), plain) == SignalAction::Forward);
}

TEST_CASE("routing: a fault a process sent is forwarded, one the kernel raised is not", "[signals]") {
    RoutingPolicy plain;
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) {
        INFO(signalName(sig));
        for (int code : {SI_USER, SI_QUEUE, SI_TKILL})
            CHECK(routeSignal({.signo = sig, .sender = 42, .code = code}, plain) == SignalAction::Forward);
        CHECK(routeSignal({.signo = sig, .sender = 0, .code = 1}, plain) == SignalAction::Ignore); // SEGV_MAPERR, ILL_ILLOPC...
    }
}

namespace {

// Runs `body` in a child with every signal blocked the way the init blocks them; its wait status.
template <class Body>
int statusOfBlockedChild(Body body) {
    pid_t pid = ::fork();
    if (pid == 0) {
        InheritedSignals::blockAll();
        body();
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

} // namespace

// The init blocks the faults too (to read the ones a process sends): a real fault must still
// kill it with the default action, as it did when they were left unblocked.
TEST_CASE("with every signal blocked, a real fault still kills with the default action", "[signals]") {
    struct rlimit no_core {0, 0};
    auto segv = statusOfBlockedChild([&] {
        ::setrlimit(RLIMIT_CORE, &no_core);
        void* page = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        *static_cast<volatile char*>(page) = 1; // a write to a read-only page
    });
    CHECK(WIFSIGNALED(segv));
    CHECK(WTERMSIG(segv) == SIGSEGV);
    auto ill = statusOfBlockedChild([&] {
        ::setrlimit(RLIMIT_CORE, &no_core);
        __builtin_trap();
    });
    CHECK(WIFSIGNALED(ill));
    CHECK(WTERMSIG(ill) == SIGILL);
    auto abrt = statusOfBlockedChild([&] {
        ::setrlimit(RLIMIT_CORE, &no_core);
        std::abort();
    });
    CHECK(WIFSIGNALED(abrt));
    CHECK(WTERMSIG(abrt) == SIGABRT);
    // And a sent one waits, blocked, for the signalfd: the process lives on.
    auto sent = statusOfBlockedChild([] {
        ::kill(::getpid(), SIGSEGV);
        sigset_t segv_only;
        sigemptyset(&segv_only);
        sigaddset(&segv_only, SIGSEGV);
        timespec none{};
        ::_exit(::sigtimedwait(&segv_only, nullptr, &none) == SIGSEGV ? 7 : 8);
    });
    CHECK(WIFEXITED(sent));
    CHECK(WEXITSTATUS(sent) == 7);
}
