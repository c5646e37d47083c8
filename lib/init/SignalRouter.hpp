#pragma once
// Signals reach the init through one signalfd on the event loop (all of them are blocked, the
// faults too: see InheritedSignals), and each is routed to one duty: reap, shut down, redeploy,
// or pass on to the main child.
#include <csignal>
#include <functional>
#include <memory>
#include <sys/types.h>

namespace boost::asio {
class io_context;
}

namespace nixproc {

enum class SignalAction {
    Reap,     // SIGCHLD
    Shutdown, // TERM, INT, QUIT: forwarded too, then the shutdown sequence
    Redeploy, // HUP when a deployment engine runs
    Forward,  // everything else that is catchable, faults a process sent included
    Ignore,   // a fault the kernel raised (it never gets this far), and what the policy withholds
};

struct RoutingPolicy {
    bool hup_redeploys = false; // HUP means "deploy now" rather than a signal for the child
};

struct ReceivedSignal {
    int signo = 0;
    pid_t sender = 0;    // 0 when sent from outside the PID namespace, or by the kernel
    int code = SI_USER;  // si_code
};

SignalAction routeSignal(const ReceivedSignal& signal, const RoutingPolicy& policy);

class SignalRouter {
public:
    using Handler = std::function<void(const ReceivedSignal&)>;

    // `blocked` must already be blocked in the calling thread.
    SignalRouter(boost::asio::io_context& io, const sigset_t& blocked, Handler handler);
    ~SignalRouter();
    SignalRouter(const SignalRouter&) = delete;
    SignalRouter& operator=(const SignalRouter&) = delete;

private:
    struct Reader;
    std::unique_ptr<Reader> reader_;
};

} // namespace nixproc
