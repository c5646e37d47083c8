#pragma once
// The control socket: a unix stream socket on the init's own io_context (no thread) through which
// nixproc-initctl asks what lib/control/Protocol.hpp describes. Each connection sends one request
// line and gets one reply line, then is closed; a deploy or rollback with "wait" stays open and
// gets that deployment's log lines and its end.
//
// What a client can cost the init is bounded: a request must come within `request_deadline` and
// fit in kMaxRequestLine bytes, at most `max_sessions` connections are served at once (beyond,
// one error line and closed at once), and a client that does not read what it is sent is dropped
// once `max_queued` bytes wait for it. Only root and the init's own user may ask (SO_PEERCRED).
#include "control/Command.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace nixproc {

class ControlServer {
public:
    using Dispatch = std::function<Reply(Command)>;
    struct Limits {
        std::size_t max_sessions = 64;
        std::chrono::milliseconds request_deadline{5000};
        std::size_t max_queued = 64 * 1024; // memory held for one client's unwritten lines (a deployment's log)
    };

    ControlServer(boost::asio::io_context& io, std::string path, Dispatch dispatch);
    ControlServer(boost::asio::io_context& io, std::string path, Dispatch dispatch, Limits limits);
    // Closes every connection and removes the socket file, if it is still the one it created.
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Creates the folder (0700) when missing, refuses one that others can write or that belongs to
    // someone else, replaces a stale socket (nothing answers on it) but not a live one (another
    // init) nor anything that is not a socket, binds the socket with mode 0600 and listens. On
    // failure `why` says what and where, and nothing is left behind.
    bool listen(std::string& why);

    // Every line the init logs: a client waiting on deployment N gets those that name "deploy #N".
    // Never logs itself (it is called from inside the logger).
    void publishLog(std::string_view line);

    const std::string& path() const;
    std::size_t connections() const; // served now (for the tests)

private:
    struct Impl;
    struct Session;
    std::shared_ptr<Impl> impl_;
};

} // namespace nixproc
