#include "process/Signals.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <system_error>

namespace nixproc {
namespace {

struct Named {
    int sig;
    const char* name;
};

constexpr std::array kNames{
    Named{SIGHUP, "HUP"},     Named{SIGINT, "INT"},       Named{SIGQUIT, "QUIT"},   Named{SIGILL, "ILL"},
    Named{SIGTRAP, "TRAP"},   Named{SIGABRT, "ABRT"},     Named{SIGBUS, "BUS"},     Named{SIGFPE, "FPE"},
    Named{SIGKILL, "KILL"},   Named{SIGUSR1, "USR1"},     Named{SIGSEGV, "SEGV"},   Named{SIGUSR2, "USR2"},
    Named{SIGPIPE, "PIPE"},   Named{SIGALRM, "ALRM"},     Named{SIGTERM, "TERM"},   Named{SIGSTKFLT, "STKFLT"},
    Named{SIGCHLD, "CHLD"},   Named{SIGCONT, "CONT"},     Named{SIGSTOP, "STOP"},   Named{SIGTSTP, "TSTP"},
    Named{SIGTTIN, "TTIN"},   Named{SIGTTOU, "TTOU"},     Named{SIGURG, "URG"},     Named{SIGXCPU, "XCPU"},
    Named{SIGXFSZ, "XFSZ"},   Named{SIGVTALRM, "VTALRM"}, Named{SIGPROF, "PROF"},   Named{SIGWINCH, "WINCH"},
    Named{SIGIO, "IO"},       Named{SIGPWR, "PWR"},       Named{SIGSYS, "SYS"},
};

std::optional<int> parseInt(std::string_view s) {
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

} // namespace

bool isFaultSignal(int sig) {
    switch (sig) {
    case SIGSEGV: case SIGBUS: case SIGFPE: case SIGILL: case SIGTRAP: case SIGSYS: case SIGABRT:
        return true;
    default:
        return false;
    }
}

bool isForwardable(int sig) {
    // 32 and 33 sit below SIGRTMIN: glibc keeps them for its threads, no program can catch them.
    if (sig < 1 || sig > SIGRTMAX || (sig > SIGSYS && sig < SIGRTMIN)) return false;
    return sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD;
}

std::string signalName(int sig) {
    for (const auto& n : kNames)
        if (n.sig == sig) return std::string("SIG") + n.name;
    if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        return sig == SIGRTMIN ? "SIGRTMIN" : "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
    return "signal " + std::to_string(sig);
}

std::optional<int> signalFromName(std::string_view name) {
    if (auto n = parseInt(name)) return (*n >= 1 && *n <= SIGRTMAX) ? n : std::nullopt;
    std::string up;
    for (char c : name) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string_view s = up;
    if (s.starts_with("SIG")) s.remove_prefix(3);
    for (const auto& n : kNames)
        if (s == n.name) return n.sig;
    if (s == "RTMIN") return SIGRTMIN;
    if (s.starts_with("RTMIN+")) {
        auto off = parseInt(s.substr(6));
        if (off && *off >= 0 && SIGRTMIN + *off <= SIGRTMAX) return SIGRTMIN + *off;
    }
    return std::nullopt;
}

InheritedSignals InheritedSignals::blockAll() {
    InheritedSignals s;
    sigfillset(&s.blocked_);
    if (int err = pthread_sigmask(SIG_SETMASK, &s.blocked_, &s.original_); err != 0)
        throw std::system_error(err, std::generic_category(), "pthread_sigmask");
    return s;
}

void InheritedSignals::restoreInChild() const noexcept {
    pthread_sigmask(SIG_SETMASK, &original_, nullptr);
}

} // namespace nixproc
