#pragma once
// Which signals the init keeps, which it passes on, and the signal state children inherit.
#include <csignal>
#include <optional>
#include <string>
#include <string_view>

namespace nixproc {

// Synchronous faults (SEGV, BUS, FPE, ILL, TRAP, SYS, ABRT): they concern the init itself,
// so they stay unblocked with their default action and are never forwarded.
bool isFaultSignal(int sig);

// Every catchable signal except SIGCHLD and the faults reaches the main child.
bool isForwardable(int sig);

// "SIGTERM", "SIGRTMIN+3"; "signal 99" for anything unknown.
std::string signalName(int sig);

// Accepts "TERM", "SIGTERM", "sigterm", "15", "RTMIN+2".
std::optional<int> signalFromName(std::string_view name);

// The signal mask the init was started with. The init blocks every non-fault signal and reads
// them from a signalfd; a child must get the original mask back before exec. Dispositions need
// no restoring: the init never changes them, so ignored signals stay ignored across exec and
// caught ones (none) would be reset by exec.
class InheritedSignals {
public:
    // Blocks every signal but the faults for the calling (only) thread and remembers the old mask.
    static InheritedSignals blockAllButFaults();

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
