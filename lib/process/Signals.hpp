#pragma once
// Which signals the init keeps, which it passes on, and the signal state children inherit.
#include <csignal>
#include <optional>
#include <string>
#include <string_view>

namespace nixproc {

// Synchronous faults (SEGV, BUS, FPE, ILL, TRAP, SYS, ABRT). The kernel raises them for the
// faulting process itself; another process can only send them (kill -SEGV). A fault the kernel
// raised has si_code > 0; one that was sent has si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL).
bool isFaultSignal(int sig);

// Whether siginfo's si_code says a process sent the signal (kill, sigqueue, tgkill) rather than
// the kernel raising it.
constexpr bool sentByProcess(int si_code) { return si_code <= 0; }

// Every catchable signal except SIGCHLD may be passed on to the main child: the faults too, when
// a process sent them (see routeSignal).
bool isForwardable(int sig);

// "SIGTERM", "SIGRTMIN+3"; "signal 99" for anything unknown.
std::string signalName(int sig);

// Accepts "TERM", "SIGTERM", "sigterm", "15", "RTMIN+2".
std::optional<int> signalFromName(std::string_view name);

// The signal mask the init was started with. The init blocks every signal and reads them from a
// signalfd; a child must get the original mask back before exec. Dispositions need no restoring:
// the init never changes them, so ignored signals stay ignored across exec and caught ones (none)
// would be reset by exec.
//
// The faults are blocked too, so that a sent one (kill -SEGV, SI_USER) reaches the signalfd and
// is passed on like any other instead of killing the init and orphaning its children. A real
// fault is never held back by the mask: Linux delivers a fault it raises (force_sig_fault) even
// while it is blocked, after resetting it to SIG_DFL and unblocking it, so the init still dies of
// it with a core. abort() unblocks SIGABRT itself before raising it. No handler is installed, so
// nothing runs in signal context and nothing differs for the children.
class InheritedSignals {
public:
    // Blocks every signal for the calling (only) thread and remembers the old mask.
    static InheritedSignals blockAll();

    // The set the init blocks (for its signalfd).
    const sigset_t& blocked() const { return blocked_; }
    const sigset_t& originalMask() const { return original_; }

    // Async-signal-safe: for use between fork and exec.
    void restoreInChild() const noexcept;

private:
    sigset_t original_{};
    sigset_t blocked_{};
};

} // namespace nixproc
