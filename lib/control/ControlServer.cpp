#include "control/ControlServer.hpp"

#include "control/Protocol.hpp"
#include "io/PathTrust.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <list>
#include <malloc.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace nixproc {
namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

// What a queued line costs beyond its bytes (its string and its place in the queue), counted
// against Limits::max_queued so that the bound is on memory, not on payload.
constexpr std::size_t kLineOverhead = 64;
// A session that held more than this gives memory back when it closes.
constexpr std::size_t kTrimAfter = 16 * 1024;

// At the cap, a connection that has not sent its request for this long gives way to a new one:
// clients that connect and never speak cannot keep a probe out for the whole request deadline.
constexpr std::chrono::milliseconds kSilentEvictable{1000};
// How long to wait before accepting again after accept failed for want of descriptors or memory
// (accepting again at once would spin: the connection that could not be taken is still there).
constexpr std::chrono::milliseconds kAcceptRetry{100};
// Log lines kept for a `wait` client before its deployment's number is known, at most.
constexpr std::size_t kEarlyLinesMax = 64 * 1024;

std::string errnoText(int e) { return std::strerror(e); }

void closeOnExec(int fd) { ::fcntl(fd, F_SETFD, FD_CLOEXEC); }

// One line to a connection that is not served, without waiting: a fresh socket's buffer takes it.
void refuseAtOnce(Socket& socket, std::string_view why) {
    std::string line = protocol::encodeError(why) + "\n";
    [[maybe_unused]] auto sent = ::send(socket.native_handle(), line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    error_code ignored;
    socket.close(ignored);
}

// Whether `line` names deployment `number`: "deploy #3: ..." or "deploy #3 | ...", not "deploy #31".
bool namesDeployment(std::string_view line, unsigned number) {
    std::string tag = "deploy #" + std::to_string(number);
    for (auto at = line.find(tag); at != std::string_view::npos; at = line.find(tag, at + 1)) {
        std::size_t after = at + tag.size();
        if (after == line.size() || !std::isdigit(static_cast<unsigned char>(line[after]))) return true;
    }
    return false;
}

// A message for the log, written after the current handler: code that runs inside the logger
// (publishLog) must not log.
void logLater(asio::io_context& io, spdlog::level::level_enum level, std::string message) {
    asio::post(io, [level, message = std::move(message)] { spdlog::log(level, "{}", message); });
}

} // namespace

struct ControlServer::Impl {
    asio::io_context& io;
    std::string path;
    Dispatch dispatch;
    Limits limits;
    asio::local::stream_protocol::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    std::list<std::shared_ptr<Session>> sessions;
    std::weak_ptr<Impl> self;
    bool listening = false;
    bool publishing = false;
    struct stat bound {}; // the socket file it made: removed at the end only if it is still that one
    std::string made_folder; // the socket's folder, when it was made here: removed at the end if empty

    Impl(asio::io_context& i, std::string p, Dispatch d, Limits l)
        : io(i), path(std::move(p)), dispatch(std::move(d)), limits(l) {}

    bool listen(std::string& why);
    void accept();
    void onAccept(Socket socket);
    bool makeRoom();
    void remove(const Session* session);
    void publishLog(std::string_view line);
    void shutdown();
};

struct ControlServer::Session : std::enable_shared_from_this<Session> {
    enum class State {
        Reading, // waiting for the request line
        Waiting, // dispatched with "wait": forwarding the deployment's lines until its end
        Closing, // the last line is queued: closed once written (or at the deadline)
        Closed,
    };

    std::weak_ptr<Impl> server;
    asio::io_context& io;
    Socket socket;
    asio::steady_timer deadline;
    Limits limits;
    Clock::time_point connected = Clock::now();
    State state = State::Reading;
    std::string in;
    std::deque<std::string> out;
    std::size_t queued = 0; // bytes in `out`
    bool writing = false;
    // With "wait":
    bool replied = false;                 // events before the reply wait for it
    std::vector<DeployEvent> before_reply;
    std::optional<unsigned> number;       // the deployment, once it started
    std::vector<std::string> early;       // lines naming some deployment, before the number is known
    std::size_t early_bytes = 0;
    bool ending = false;                  // the end event is on its way

    Session(std::weak_ptr<Impl> s, asio::io_context& i, Socket sock, Limits l)
        : server(std::move(s)), io(i), socket(std::move(sock)), deadline(i), limits(l) {}

    void start() {
        deadline.expires_after(limits.request_deadline);
        deadline.async_wait([self = shared_from_this()](error_code ec) {
            if (ec || self->state != State::Reading) return;
            auto seconds = std::chrono::duration<double>(self->limits.request_deadline).count();
            self->fail("no request within " + fmt::format("{:g}", seconds) + " s");
        });
        // One more byte than a request may have, for its newline.
        asio::async_read_until(socket, asio::dynamic_buffer(in, protocol::kMaxRequestLine + 1), '\n',
                               [self = shared_from_this()](error_code ec, std::size_t length) { self->onRead(ec, length); });
    }

    void onRead(error_code ec, std::size_t length) {
        if (state != State::Reading) return;
        if (ec == asio::error::not_found)
            return fail("request longer than " + std::to_string(protocol::kMaxRequestLine) + " bytes");
        if (ec == asio::error::eof && !in.empty()) length = in.size() + 1; // a last line without its newline
        else if (ec) return close();
        std::string line = in.substr(0, length - 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        deadline.cancel();
        handle(line);
    }

    void handle(const std::string& line) {
        protocol::Request request;
        try {
            request = protocol::decodeRequest(line);
        } catch (const protocol::ProtocolError& e) {
            return fail(e.what());
        }
        auto srv = server.lock();
        if (!srv) return close();
        if (request.wait) {
            request.command.observer = [weak = weak_from_this()](const DeployEvent& event) {
                if (auto s = weak.lock()) s->onDeployEvent(event);
            };
        }
        // Set before dispatching: the observer may be told at once, and lines may be logged meanwhile.
        state = request.wait ? State::Waiting : State::Closing;
        Command::Kind asked = request.command.kind;
        Reply reply;
        try {
            reply = srv->dispatch(std::move(request.command));
        } catch (const std::exception& e) {
            reply = Reply{.accepted = false, .why = std::string("internal error: ") + e.what()};
        }
        if (state == State::Closed) return;
        send(protocol::encodeReply(asked, reply));
        replied = true;
        if (!request.wait || !reply.accepted) return closeAfterFlush();
        watchForHangUp();
        for (const auto& event : std::exchange(before_reply, {})) onDeployEvent(event);
    }

    void onDeployEvent(const DeployEvent& event) {
        if (state != State::Waiting || ending) return;
        if (!replied) return before_reply.push_back(event);
        if (event.kind == DeployEvent::Kind::Started) {
            number = event.number;
            send(protocol::encodeEvent(event));
            for (const auto& line : std::exchange(early, {}))
                if (namesDeployment(line, *number)) send(protocol::encodeLog(line));
            early_bytes = 0;
            return;
        }
        // The end goes out after the current handler: what the init logs about the deployment
        // right after telling its end ("deploy #3: done in 1.2 s") still reaches the client first.
        ending = true;
        asio::post(io, [self = shared_from_this(), event] {
            if (self->state != State::Waiting) return;
            self->send(protocol::encodeEvent(event));
            self->closeAfterFlush();
        });
    }

    void onLog(std::string_view line) {
        if (state != State::Waiting) return;
        if (number) {
            if (namesDeployment(line, *number)) send(protocol::encodeLog(line));
        } else if (line.find("deploy #") != std::string_view::npos && early_bytes + line.size() <= kEarlyLinesMax) {
            early.emplace_back(line);
            early_bytes += line.size();
        }
    }

    // A waiting client sends nothing more: readable means it hung up (or broke the protocol).
    void watchForHangUp() {
        socket.async_wait(Socket::wait_read, [self = shared_from_this()](error_code ec) {
            if (ec || self->state == State::Closed) return;
            self->close();
        });
    }

    // At once, without waiting for the client to read (a fresh connection's buffer takes the line).
    void sayAndClose(std::string_view why) {
        if (state == State::Closed) return;
        std::string line = protocol::encodeError(why) + "\n";
        [[maybe_unused]] auto sent = ::send(socket.native_handle(), line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        close();
    }

    void fail(const std::string& why) {
        send(protocol::encodeError(why));
        closeAfterFlush();
    }

    void send(std::string line) {
        if (state == State::Closed) return;
        line += '\n';
        queued += line.size() + kLineOverhead;
        if (queued > limits.max_queued) { // it does not read: it does not get to hold the init's memory
            logLater(io, spdlog::level::warn,
                     "control: dropped a client that does not read (" + std::to_string(queued) + " bytes waiting)");
            return close();
        }
        out.push_back(std::move(line));
        if (!writing) writeNext();
    }

    void writeNext() {
        writing = true;
        asio::async_write(socket, asio::buffer(out.front()), [self = shared_from_this()](error_code ec, std::size_t) {
            self->writing = false;
            if (self->state == State::Closed) return;
            if (ec) return self->close();
            self->queued -= self->out.front().size() + kLineOverhead;
            self->out.pop_front();
            if (!self->out.empty()) self->writeNext();
            else if (self->state == State::Closing) self->close();
        });
    }

    void closeAfterFlush() {
        if (state == State::Closed) return;
        state = State::Closing;
        if (!writing && out.empty()) return close();
        // A client that does not read its last lines is closed anyway, after a while.
        deadline.expires_after(limits.request_deadline);
        deadline.async_wait([self = shared_from_this()](error_code ec) {
            if (!ec) self->close();
        });
    }

    void close() {
        if (state == State::Closed) return;
        state = State::Closed;
        deadline.cancel();
        error_code ignored;
        socket.close(ignored); // pending operations end with operation_aborted
        bool held_much = queued > kTrimAfter;
        out.clear();
        queued = 0;
        // PID 1 lives long: what a client that did not read made it hold goes back to the system
        // (glibc keeps freed memory otherwise; 60 such clients left 39 MB behind).
        if (held_much) ::malloc_trim(0);
        early.clear();
        before_reply.clear();
        if (auto srv = server.lock()) srv->remove(this);
    }
};

bool ControlServer::Impl::listen(std::string& why) {
    namespace fs = std::filesystem;
    if (listening) {
        why = "control socket " + path + ": already listening";
        return false;
    }
    if (path.empty()) {
        why = "no control socket path";
        return false;
    }
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
        why = "control socket " + path + ": longer than a unix socket path can be (" +
              std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)";
        return false;
    }
    if (path.front() != '/') {
        why = "control socket " + path + ": not an absolute path";
        return false;
    }
    fs::path folder = fs::path(path).parent_path();
    // Made here when missing, for the init's user only. Each missing component is made 0700 (and
    // chmod'ed, whatever the umask).
    std::error_code fec;
    if (!fs::exists(folder, fec)) {
        fs::path made;
        for (const auto& part : folder) {
            made /= part;
            if (::mkdir(made.c_str(), 0700) == 0) {
                ::chmod(made.c_str(), 0700);
                if (made == folder) made_folder = made.string();
            } else if (errno != EEXIST) {
                why = "control socket " + path + ": cannot create " + made.string() + ": " + errnoText(errno);
                return false;
            }
        }
    }
    struct stat st {};
    if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        why = "control socket " + path + ": " + folder.string() + " is not a folder";
        return false;
    }
    // Whoever can write the folder can replace the socket with one of their own.
    std::string real = fs::canonical(folder, fec).string();
    if (std::string untrusted = untrustedPath(fec ? folder.string() : real); !untrusted.empty()) {
        why = "control socket " + path + ": " + untrusted;
        return false;
    }

    struct stat existing {};
    if (::lstat(path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode)) {
            why = "control socket " + path + ": something that is not a socket is there: not replacing it";
            return false;
        }
        // A socket nobody listens on any more (the previous run's, after a SIGKILL) is replaced;
        // one that answers belongs to a running init. Not blocking: a full backlog says EAGAIN.
        int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
        int connected = probe < 0 ? -1 : ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof address);
        int error = connected == 0 ? 0 : errno;
        if (probe >= 0) ::close(probe);
        if (connected == 0 || error == EAGAIN || error == EINPROGRESS) {
            why = "control socket " + path + ": another process answers on it (another nixproc-init?): not replacing it";
            return false;
        }
        if (error != ECONNREFUSED && error != ENOENT) {
            why = "control socket " + path + ": cannot tell whether something answers on it: " + errnoText(error);
            return false;
        }
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            why = "control socket " + path + ": cannot remove the stale socket: " + errnoText(errno);
            return false;
        }
        spdlog::info("control socket {}: removed a stale socket nothing answered on", path);
    }

    error_code ec;
    acceptor.open(asio::local::stream_protocol(), ec);
    if (ec) {
        why = "control socket " + path + ": " + ec.message();
        return false;
    }
    closeOnExec(acceptor.native_handle());
    mode_t old = ::umask(0177); // the socket is made 0600: no moment when others could connect
    acceptor.bind(asio::local::stream_protocol::endpoint(path), ec);
    ::umask(old);
    if (!ec && ::lstat(path.c_str(), &bound) != 0) ec = error_code(errno, boost::system::system_category());
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        why = "control socket " + path + ": " + ec.message();
        error_code ignored;
        acceptor.close(ignored);
        if (bound.st_ino != 0) ::unlink(path.c_str());
        bound = {};
        return false;
    }
    listening = true;
    accept();
    return true;
}

void ControlServer::Impl::accept() {
    acceptor.async_accept([weak = self](error_code ec, Socket socket) {
        auto impl = weak.lock();
        if (!impl || !impl->listening || ec == asio::error::operation_aborted) return;
        if (!ec) {
            impl->onAccept(std::move(socket));
            return impl->accept();
        }
        if (ec == asio::error::connection_aborted) return impl->accept();
        // Out of descriptors or memory: the waiting connection stays; try again in a moment.
        spdlog::warn("control socket {}: cannot accept a connection: {}", impl->path, ec.message());
        impl->accept_retry.expires_after(kAcceptRetry);
        impl->accept_retry.async_wait([weak](error_code ec) {
            auto impl = weak.lock();
            if (!ec && impl && impl->listening) impl->accept();
        });
    });
}

void ControlServer::Impl::onAccept(Socket socket) {
    closeOnExec(socket.native_handle());
    ucred peer{};
    socklen_t size = sizeof peer;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0)
        return refuseAtOnce(socket, "cannot tell who is asking: " + errnoText(errno));
    if (peer.uid != 0 && peer.uid != ::geteuid()) {
        spdlog::warn("control socket {}: refused uid {} (pid {}): neither root nor the init's user", path, peer.uid, peer.pid);
        return refuseAtOnce(socket, "permission denied: uid " + std::to_string(peer.uid) + " is neither root nor the init's user");
    }
    if (sessions.size() >= limits.max_sessions && !makeRoom())
        return refuseAtOnce(socket, "busy: " + std::to_string(limits.max_sessions) + " connections are served now; try again");
    auto session = std::make_shared<Session>(self, io, std::move(socket), limits);
    sessions.push_back(session);
    session->start();
}

// Closes the connection that has been silent longest, if it has been for kSilentEvictable.
bool ControlServer::Impl::makeRoom() {
    std::shared_ptr<Session> oldest;
    for (const auto& s : sessions)
        if (s->state == Session::State::Reading && (!oldest || s->connected < oldest->connected)) oldest = s;
    if (!oldest || Clock::now() - oldest->connected < kSilentEvictable) return false;
    oldest->sayAndClose("closed: no request yet, and other clients are waiting");
    return true;
}

void ControlServer::Impl::remove(const Session* session) {
    sessions.remove_if([session](const auto& s) { return s.get() == session; });
}

void ControlServer::Impl::publishLog(std::string_view line) {
    if (publishing || sessions.empty()) return; // a line logged while forwarding one is not forwarded
    publishing = true;
    std::vector<std::shared_ptr<Session>> waiting;
    for (const auto& s : sessions)
        if (s->state == Session::State::Waiting) waiting.push_back(s);
    for (const auto& s : waiting) s->onLog(line);
    publishing = false;
}

void ControlServer::Impl::shutdown() {
    if (listening) {
        listening = false;
        error_code ignored;
        acceptor.close(ignored);
        accept_retry.cancel();
    }
    for (const auto& s : std::exchange(sessions, {})) s->close();
    // Only the file it made: a later init may already have replaced it with its own.
    struct stat now {};
    if (bound.st_ino != 0 && ::lstat(path.c_str(), &now) == 0 && now.st_ino == bound.st_ino && now.st_dev == bound.st_dev)
        ::unlink(path.c_str());
    bound = {};
    // Nothing of the init is left in /run once it is gone (a later init makes it again).
    if (!made_folder.empty()) ::rmdir(made_folder.c_str());
    made_folder.clear();
}

ControlServer::ControlServer(asio::io_context& io, std::string path, Dispatch dispatch)
    : ControlServer(io, std::move(path), std::move(dispatch), Limits{}) {}

ControlServer::ControlServer(asio::io_context& io, std::string path, Dispatch dispatch, Limits limits)
    : impl_(std::make_shared<Impl>(io, std::move(path), std::move(dispatch), limits)) {
    impl_->self = impl_;
}

ControlServer::~ControlServer() { impl_->shutdown(); }

bool ControlServer::listen(std::string& why) { return impl_->listen(why); }
void ControlServer::publishLog(std::string_view line) { impl_->publishLog(line); }
const std::string& ControlServer::path() const { return impl_->path; }
std::size_t ControlServer::connections() const { return impl_->sessions.size(); }

} // namespace nixproc
