#pragma once
// The control socket's protocol: one JSON object per line, each way.
//
//   client → init, one line:  {"command":"status"}
//                             {"command":"history","count":5}
//                             {"command":"health","live":false}
//                             {"command":"deploy","wait":true}
//                             {"command":"rollback","generation":3,"wait":true}
//   init → client, one line:  {"ok":true,...} or {"ok":false,"error":"..."}
//   then, with "wait" and ok: {"event":"started","number":N}
//                             {"event":"log","line":"..."}          (that deployment's log lines)
//                             {"event":"end","number":N,"outcome":"succeeded"}
//                          or {"event":"end","outcome":"not started","why":"..."}
//   and the init closes the connection.
//
// Only the socket's commands travel here (Status, History, Health, Deploy, Rollback): the others
// (Shutdown, Forward, Reap) are the init's own, from signals. Every string written is valid UTF-8
// (a byte that is not becomes U+FFFD), so any JSON parser takes every line. No Boost in this
// header: the client includes it without Asio, and Boost.JSON is compiled in Protocol.cpp only.
#include "control/Command.hpp"

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace nixproc::protocol {

// A request line is at most this long (without its newline); the server refuses a longer one.
inline constexpr std::size_t kMaxRequestLine = 4096;

// What is wrong with a line, in a sentence that names it: "not JSON: ...", "unknown command 'x'
// (status, deploy, rollback, history, health)", "'count' must be a whole number from 1 to 10000".
struct ProtocolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Request {
    Command command; // Status, History, Health, Deploy or Rollback; no observer
    bool wait = false; // Deploy, Rollback: follow the deployment to its end
};

// One line, without its newline. Throws ProtocolError for a command the socket does not take.
std::string encodeRequest(const Request& request);
// Throws ProtocolError. Unknown keys are refused (a typo is not silently the default), as are
// keys that do not belong to the command ("wait" for status).
Request decodeRequest(std::string_view line);

// {"ok":true} with "status", "health" when the reply has them, "history" (a list, maybe empty) when
// `asked` is History, and "message" for an accepted reply's why; {"ok":false,"error":why} for a
// refusal (with "health" still, when the reply has one: an unhealthy answer is an answer).
std::string encodeReply(Command::Kind asked, const Reply& reply);
std::string encodeError(std::string_view why);
Reply decodeReply(std::string_view line); // throws ProtocolError

// What follows the reply of a request with "wait".
struct StreamEvent {
    enum class Kind { Log, Started, End } kind = Kind::Log;
    std::string line;           // Log
    unsigned number = 0;        // Started, End (0 when it never started)
    bool started = true;        // End: false when the deployment never started (`why` says why)
    Outcome outcome = Outcome::Running; // End, when it started
    std::string why;            // End, when it did not start
};
std::string encodeLog(std::string_view line);
// Started → "started"; Ended → "end" with the outcome; NotStarted → "end" with why.
std::string encodeEvent(const DeployEvent& event);
StreamEvent decodeEvent(std::string_view line); // throws ProtocolError

// `text` with every byte that is not UTF-8 replaced by U+FFFD: what the encoders write.
std::string validUtf8(std::string_view text);

} // namespace nixproc::protocol
