#include "init/SignalRouter.hpp"

#include "process/Signals.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <cerrno>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <system_error>
#include <unistd.h>

namespace nixproc {

SignalAction routeSignal(const ReceivedSignal& signal, const RoutingPolicy& policy) {
    int sig = signal.signo;
    switch (sig) {
    case SIGCHLD: return SignalAction::Reap;
    case SIGTERM: case SIGINT: case SIGQUIT: return SignalAction::Shutdown;
    case SIGHUP: return policy.hup_redeploys ? SignalAction::Redeploy : SignalAction::Forward;
    default:
        // A fault the kernel raised concerns the init's own code: it kills the init before it
        // could be read here. Only a sent one is news for the child.
        if (isFaultSignal(sig) && !sentByProcess(signal.code)) return SignalAction::Ignore;
        return isForwardable(sig) ? SignalAction::Forward : SignalAction::Ignore;
    }
}

struct SignalRouter::Reader {
    boost::asio::posix::stream_descriptor fd;
    Handler handler;
    pid_t self = ::getpid();

    Reader(boost::asio::io_context& io, int sfd, Handler h) : fd(io, sfd), handler(std::move(h)) {}

    void wait() {
        fd.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
            if (ec) return; // cancelled: the router is going away
            readAll();
            wait();
        });
    }

    void readAll() {
        signalfd_siginfo info{};
        while (::read(fd.native_handle(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            // The kernel "sends" SIGPIPE, SIGTTOU... to the init itself as SI_USER from its own
            // pid: those concern the init's own writes, not the child.
            if (info.ssi_code == SI_USER && static_cast<pid_t>(info.ssi_pid) == self) continue;
            handler({static_cast<int>(info.ssi_signo), static_cast<pid_t>(info.ssi_pid), info.ssi_code});
        }
    }
};

SignalRouter::SignalRouter(boost::asio::io_context& io, const sigset_t& blocked, Handler handler) {
    int sfd = ::signalfd(-1, &blocked, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
    reader_ = std::make_unique<Reader>(io, sfd, std::move(handler));
    reader_->wait();
}

SignalRouter::~SignalRouter() = default;

} // namespace nixproc
