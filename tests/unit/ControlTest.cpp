// The control socket: its protocol (lib/control/Protocol.hpp) and its server on a real io_context,
// in a temporary folder, with a dispatch that stands in for the init's. The loop runs on a thread
// of its own here so that the test can be a blocking client; the server itself has no thread.
#include "control/ControlServer.hpp"
#include "control/Protocol.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace nixproc;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace protocol = nixproc::protocol;

namespace {

using Clock = std::chrono::steady_clock;

DeploymentStatus deployment(unsigned number, Trigger trigger, Outcome outcome, std::string plan) {
    DeploymentStatus d;
    d.number = number;
    d.trigger = trigger;
    d.outcome = outcome;
    d.started = "2026-11-29T08:00:0" + std::to_string(number % 10) + "Z";
    if (outcome != Outcome::Running) d.ended = "2026-11-29T08:01:0" + std::to_string(number % 10) + "Z";
    d.plan = std::move(plan);
    if (outcome == Outcome::Succeeded) d.generation = number + 40;
    return d;
}

// Every field set to something that is not its default.
Status fullStatus() {
    Status s;
    s.phase = InitPhase::Running;
    s.manager = "supervisord";
    s.main_pid = 12;
    s.manager_ready_for = 1500ms;
    s.manager_given_up = true;
    s.uptime = 98765ms;
    s.orphans_reaped = 4;
    DeployStatus d;
    d.stage = DeployStage::Switching;
    d.current = deployment(5, Trigger::Watch, Outcome::Running, "+webapp2 ~nginx =webapp");
    d.current_elapsed = 2345ms;
    d.last = deployment(4, Trigger::Control, Outcome::Failed, "~nginx");
    d.last_success = deployment(3, Trigger::Boot, Outcome::Succeeded, "+webapp +nginx");
    d.pending = true;
    d.needed = true;
    d.watching = true;
    d.watcher_problem = "inotify: no space left";
    d.by_outcome = {{Outcome::Succeeded, 3}, {Outcome::Failed, 1}, {Outcome::TimedOut, 2}};
    s.deploy = d;
    return s;
}

std::string statusLine(const Status& s) {
    Reply r;
    r.status = s;
    return protocol::encodeReply(Command::Kind::Status, r);
}

std::string errorOf(const std::string& line) {
    try {
        protocol::decodeRequest(line);
    } catch (const protocol::ProtocolError& e) {
        return e.what();
    }
    return "(accepted)";
}

// A folder of its own, 0700, removed at the end.
struct TempFolder {
    std::string path;
    TempFolder() {
        char name[] = "/tmp/nixproc-control-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~TempFolder() { fs::remove_all(path); }
};

// A blocking client as nixproc-initctl is, without Catch macros (the 100-client test runs it on
// threads): failures are results.
class Client {
public:
    explicit Client(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) error_ = std::strerror(errno);
    }
    ~Client() { ::close(fd_); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    bool connected() const { return error_.empty(); }
    const std::string& error() const { return error_; }

    bool send(const std::string& bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n < 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }

    // The next line (without its newline); nullopt at the end of the stream or after `timeout`
    // (eof() tells which).
    std::optional<std::string> line(std::chrono::milliseconds timeout = 5s) {
        auto until = Clock::now() + timeout;
        for (;;) {
            if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
                std::string l = buffer_.substr(0, nl);
                buffer_.erase(0, nl + 1);
                return l;
            }
            if (eof_) return std::nullopt;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
            if (left <= 0ms) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[65536];
            ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n <= 0) eof_ = true; // end, or reset after the last line (unread bytes of ours at its close)
            else buffer_.append(chunk, static_cast<std::size_t>(n));
        }
    }
    // True once the server closed the connection (and no more lines came), within `timeout`.
    bool closedWithin(std::chrono::milliseconds timeout) {
        auto l = line(timeout);
        return !l && eof_;
    }
    bool eof() const { return eof_; }
    int fd() const { return fd_; }

private:
    int fd_ = -1;
    std::string error_, buffer_;
    bool eof_ = false;
};

// A ControlServer on a real io_context, run by a thread of its own; `dispatch` stands in for the
// init's and runs on that thread.
struct Served {
    TempFolder dir;
    std::string path = dir.path + "/run/nixproc-init/control.sock";
    boost::asio::io_context io;
    std::unique_ptr<ControlServer> server;
    std::function<Reply(Command)> dispatch = [](const Command& c) {
        Reply r;
        if (c.kind == Command::Kind::Status) r.status = fullStatus();
        return r;
    };
    std::atomic<int> dispatched{0};
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
    std::thread loop;

    explicit Served(ControlServer::Limits limits = {}) {
        server = std::make_unique<ControlServer>(io, path, [this](Command c) {
            ++dispatched;
            return dispatch(std::move(c));
        }, limits);
    }
    void start() {
        std::string why;
        REQUIRE(server->listen(why));
        CHECK(why.empty());
        work.emplace(io.get_executor());
        loop = std::thread([this] { io.run(); });
    }
    // Runs `f` on the loop and returns its result.
    template <typename F>
    auto onLoop(F f) -> decltype(f()) {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto result = task.get_future();
        boost::asio::post(io, [&task] { task(); });
        if (result.wait_for(10s) != std::future_status::ready) throw std::runtime_error("the loop did not run a handler within 10 s");
        return result.get();
    }
    std::size_t connections() {
        return onLoop([this] { return server->connections(); });
    }
    // Until the server serves `n` connections, within 5 s.
    bool connectionsBecome(std::size_t n) {
        for (auto until = Clock::now() + 5s; Clock::now() < until; std::this_thread::sleep_for(5ms))
            if (connections() == n) return true;
        return connections() == n;
    }
    ~Served() {
        if (loop.joinable()) {
            onLoop([this] { server.reset(); });
            work.reset();
            loop.join();
        }
    }
};

std::string ask(const std::string& path, const std::string& request) {
    Client c(path);
    if (!c.connected()) return "connect: " + c.error();
    c.send(request + "\n");
    return c.line().value_or("(no line)");
}

} // namespace

// ---- the protocol ----

TEST_CASE("every socket command goes to a request line and back unchanged", "[control][protocol]") {
    auto round = [](Command c, bool wait) {
        protocol::Request r{c, wait};
        std::string line = protocol::encodeRequest(r);
        CAPTURE(line);
        CHECK(line.find('\n') == std::string::npos);
        auto back = protocol::decodeRequest(line);
        CHECK(back.command.kind == c.kind);
        CHECK(back.command.count == c.count);
        CHECK(back.command.live == c.live);
        CHECK(back.command.generation == c.generation);
        CHECK(back.wait == wait);
        return line;
    };
    CHECK(round(Command{.kind = Command::Kind::Status}, false) == R"({"command":"status"})");
    CHECK(round(Command{.kind = Command::Kind::History, .count = 5}, false) == R"({"command":"history","count":5})");
    CHECK(round(Command{.kind = Command::Kind::Health, .live = true}, false) == R"({"command":"health","live":true})");
    CHECK(round(Command{.kind = Command::Kind::Health}, false) == R"({"command":"health","live":false})");
    CHECK(round(Command{.kind = Command::Kind::Deploy}, true) == R"({"command":"deploy","wait":true})");
    CHECK(round(Command{.kind = Command::Kind::Deploy}, false) == R"({"command":"deploy","wait":false})");
    CHECK(round(Command{.kind = Command::Kind::Rollback, .generation = 3}, true) ==
          R"({"command":"rollback","generation":3,"wait":true})");
    CHECK(round(Command{.kind = Command::Kind::Rollback}, false) == R"({"command":"rollback","wait":false})");
    // What a deploy or a rollback from the socket is recorded as.
    CHECK(protocol::decodeRequest(R"({"command":"deploy"})").command.trigger == Trigger::Control);
    CHECK(protocol::decodeRequest(R"({"command":"rollback"})").command.trigger == Trigger::Rollback);
    // Defaults when a key is left out.
    CHECK(protocol::decodeRequest(R"({"command":"history"})").command.count == 10);
    CHECK_FALSE(protocol::decodeRequest(R"({"command":"health"})").command.live);
    CHECK_FALSE(protocol::decodeRequest(R"( {"command":"deploy"} )").wait);
    // The init's own commands do not travel on the socket.
    CHECK_THROWS_AS(protocol::encodeRequest({Command{.kind = Command::Kind::Reap}, false}), protocol::ProtocolError);
}

TEST_CASE("a malformed request is refused with a message that names what is wrong", "[control][protocol]") {
    CHECK_THAT(errorOf(""), Catch::StartsWith("the request is not JSON: "));
    CHECK_THAT(errorOf("{\"command\":"), Catch::StartsWith("the request is not JSON: "));
    CHECK_THAT(errorOf(R"({"command":"status"} {"command":"status"})"), Catch::StartsWith("the request is not JSON: "));
    CHECK(errorOf("[1,2]") == "the request must be a JSON object, not a list");
    CHECK(errorOf("\"status\"") == "the request must be a JSON object, not a string");
    CHECK(errorOf("{}") == "the request has no 'command' (status, deploy, rollback, history, health)");
    CHECK(errorOf(R"({"command":5})") == "'command' must be a string, not a whole number");
    CHECK(errorOf(R"({"command":"reboot"})") == "unknown command 'reboot' (status, deploy, rollback, history, health)");
    CHECK(errorOf(R"({"command":"reap"})") == "unknown command 'reap' (status, deploy, rollback, history, health)");
    CHECK(errorOf(R"({"command":"history","count":0})") == "'count' must be a whole number from 1 to 10000, not 0");
    CHECK(errorOf(R"({"command":"history","count":-3})") == "'count' must be a whole number from 1 to 10000, not -3");
    CHECK(errorOf(R"({"command":"history","count":2.5})") == "'count' must be a whole number from 1 to 10000, not 2.5E0");
    CHECK(errorOf(R"({"command":"history","count":"5"})") == "'count' must be a whole number from 1 to 10000, not a string");
    CHECK(errorOf(R"({"command":"rollback","generation":0})") == "'generation' must be a whole number from 1 to 4294967295, not 0");
    CHECK(errorOf(R"({"command":"deploy","wait":1})") == "'wait' must be true or false, not a whole number");
    CHECK(errorOf(R"({"command":"health","live":"yes"})") == "'live' must be true or false, not a string");
    CHECK(errorOf(R"({"command":"status","wait":true})") == "unknown key 'wait' in a status request");
    CHECK(errorOf(R"({"command":"deploy","wiat":true})") == "unknown key 'wiat' in a deploy request");
    CHECK(errorOf(R"({"command":"history","count":3,"generation":2})") == "unknown key 'generation' in a history request");
    // What the peer sent is quoted short, and as valid UTF-8.
    CHECK(errorOf("{\"command\":\"" + std::string(100, 'x') + "\"}") ==
          "unknown command '" + std::string(40, 'x') + "...' (status, deploy, rollback, history, health)");
    CHECK(errorOf("{\"command\":\"\xc3\xa9t\xc3\xa9\"}") == "unknown command '\xc3\xa9t\xc3\xa9' (status, deploy, rollback, history, health)");
    CHECK_THAT(errorOf("{\"command\":\"st\xff\"}"), Catch::StartsWith("the request is not JSON: "));
    // Nesting is bounded: a deep request is refused, not recursed into.
    CHECK_THAT(errorOf(std::string(1000, '[') + std::string(1000, ']')), Catch::StartsWith("the request is not JSON: "));
}

TEST_CASE("a status with every field set goes to JSON and back unchanged, under the documented keys", "[control][protocol]") {
    Status s = fullStatus();
    std::string line = statusLine(s);
    CAPTURE(line);
    CHECK(line.find('\n') == std::string::npos);
    for (const char* key : {R"("ok":true)", R"("phase":"running")", R"("manager":"supervisord")", R"("main_pid":12)",
                            R"("manager_ready_for_ms":1500)", R"("manager_given_up":true)", R"("uptime_ms":98765)",
                            R"("orphans_reaped":4)", R"("stage":"switching")", R"("elapsed_ms":2345)", R"("pending":true)",
                            R"("needed":true)", R"("watching":true)", R"("watcher_problem":"inotify: no space left")",
                            R"("plan":"+webapp2 ~nginx =webapp")", R"("trigger":"watch")", R"("outcome":"running")",
                            R"("started":"2026-11-29T08:00:05Z")", R"("last":{"number":4)", R"("last_success":{"number":3)",
                            R"("generation":43)",
                            R"("deployments_by_outcome":{"succeeded":3,"failed":1,"refused":0,"timed out":2,"interrupted":0})"})
        CHECK_THAT(line, Catch::Contains(key));
    Reply back = protocol::decodeReply(line);
    REQUIRE(back.accepted);
    REQUIRE(back.status);
    CHECK(back.status->phase == InitPhase::Running);
    CHECK(back.status->manager == "supervisord");
    CHECK(back.status->main_pid == 12);
    CHECK(back.status->manager_ready_for == 1500ms);
    CHECK(back.status->manager_given_up);
    CHECK(back.status->uptime == 98765ms);
    CHECK(back.status->orphans_reaped == 4);
    REQUIRE(back.status->deploy);
    const DeployStatus& d = *back.status->deploy;
    CHECK(d.stage == DeployStage::Switching);
    REQUIRE(d.current);
    CHECK(d.current->number == 5);
    CHECK(d.current->trigger == Trigger::Watch);
    CHECK(d.current->plan == "+webapp2 ~nginx =webapp");
    CHECK(d.current_elapsed == 2345ms);
    REQUIRE(d.last);
    CHECK(d.last->outcome == Outcome::Failed);
    CHECK(d.last->ended == "2026-11-29T08:01:04Z");
    REQUIRE(d.last_success);
    CHECK(d.last_success->generation == 43u);
    CHECK(d.pending);
    CHECK(d.needed);
    CHECK(d.watching);
    CHECK(d.watcher_problem == "inotify: no space left");
    CHECK(d.by_outcome.at(Outcome::Succeeded) == 3);
    CHECK(d.by_outcome.at(Outcome::TimedOut) == 2);
    CHECK(statusLine(*back.status) == line);
}

TEST_CASE("a plain init's status has no deploy section, and what is not known is null", "[control][protocol]") {
    Status s;
    s.manager = "main child";
    std::string line = statusLine(s);
    CHECK(line == R"({"ok":true,"status":{"phase":"starting","manager":"main child","main_pid":-1,"manager_ready_for_ms":null,)"
                  R"("manager_given_up":false,"uptime_ms":0,"orphans_reaped":0,"deploy":null}})");
    Reply back = protocol::decodeReply(line);
    REQUIRE(back.status);
    CHECK_FALSE(back.status->manager_ready_for);
    CHECK_FALSE(back.status->deploy);
    CHECK(back.status->main_pid == -1);
    // A deploy engine with nothing run yet.
    s.deploy = DeployStatus{};
    line = statusLine(s);
    CHECK_THAT(line, Catch::Contains(R"("deploy":{"stage":"waiting-for-manager","current":null,"last":null,"last_success":null,)"));
    CHECK(statusLine(*protocol::decodeReply(line).status) == line);
}

TEST_CASE("every phase, stage, trigger and outcome goes through a status by its name and back", "[control][protocol]") {
    for (auto phase : {InitPhase::Starting, InitPhase::Running, InitPhase::StopSteps, InitPhase::SignalMain, InitPhase::StopRest,
                       InitPhase::Killing, InitPhase::Exiting}) {
        Status s;
        s.phase = phase;
        std::string line = statusLine(s);
        CHECK_THAT(line, Catch::Contains("\"phase\":\"" + std::string(name(phase)) + "\""));
        CHECK(protocol::decodeReply(line).status->phase == phase);
    }
    for (auto stage : {DeployStage::WaitingForManager, DeployStage::Idle, DeployStage::Debouncing, DeployStage::Bootstrapping,
                       DeployStage::Checking, DeployStage::Switching, DeployStage::RollingBack, DeployStage::Collecting,
                       DeployStage::Stopped}) {
        Status s;
        s.deploy = DeployStatus{.stage = stage};
        CHECK(protocol::decodeReply(statusLine(s)).status->deploy->stage == stage);
    }
    for (auto trigger : {Trigger::Boot, Trigger::Watch, Trigger::Signal, Trigger::Retry, Trigger::Control, Trigger::Rollback,
                         Trigger::AutoRollback}) {
        for (auto outcome : {Outcome::Running, Outcome::Succeeded, Outcome::Failed, Outcome::Refused, Outcome::TimedOut,
                             Outcome::Interrupted}) {
            Reply r;
            r.history = {deployment(1, trigger, outcome, "")};
            Reply back = protocol::decodeReply(protocol::encodeReply(Command::Kind::History, r));
            REQUIRE(back.history.size() == 1);
            CHECK(back.history[0].trigger == trigger);
            CHECK(back.history[0].outcome == outcome);
        }
    }
}

TEST_CASE("history, health, refusal and message replies go to JSON and back", "[control][protocol]") {
    Reply history;
    history.history = {deployment(2, Trigger::Boot, Outcome::Succeeded, "+webapp"),
                       deployment(3, Trigger::Watch, Outcome::Failed, "+webapp2 ~nginx =webapp")};
    std::string line = protocol::encodeReply(Command::Kind::History, history);
    CHECK(line == R"({"ok":true,"history":[)"
                  R"({"number":2,"trigger":"boot","outcome":"succeeded","started":"2026-11-29T08:00:02Z","ended":"2026-11-29T08:01:02Z","plan":"+webapp","generation":42},)"
                  R"({"number":3,"trigger":"watch","outcome":"failed","started":"2026-11-29T08:00:03Z","ended":"2026-11-29T08:01:03Z","plan":"+webapp2 ~nginx =webapp","generation":null}]})");
    Reply back = protocol::decodeReply(line);
    REQUIRE(back.history.size() == 2);
    CHECK(back.history[1].plan == "+webapp2 ~nginx =webapp");
    CHECK_FALSE(back.history[1].generation);
    CHECK(protocol::encodeReply(Command::Kind::History, back) == line);
    // No deployment yet is an empty list, not a missing answer.
    CHECK(protocol::encodeReply(Command::Kind::History, Reply{}) == R"({"ok":true,"history":[]})");

    Reply health;
    health.health = Health{false, "deploy #4 failed"};
    line = protocol::encodeReply(Command::Kind::Health, health);
    CHECK(line == R"({"ok":true,"health":{"healthy":false,"why":"deploy #4 failed"}})");
    back = protocol::decodeReply(line);
    REQUIRE(back.health);
    CHECK_FALSE(back.health->ok);
    CHECK(back.health->why == "deploy #4 failed");

    // The init may call an unhealthy answer a refusal too: the answer still travels with it.
    Reply unhealthy{.accepted = false, .why = "deploy #4 failed", .health = Health{false, "deploy #4 failed"}};
    line = protocol::encodeReply(Command::Kind::Health, unhealthy);
    CHECK(line == R"({"ok":false,"health":{"healthy":false,"why":"deploy #4 failed"},"error":"deploy #4 failed"})");
    back = protocol::decodeReply(line);
    CHECK_FALSE(back.accepted);
    REQUIRE(back.health);
    CHECK(back.health->why == "deploy #4 failed");

    CHECK(protocol::encodeError("nothing to roll back to") == R"({"ok":false,"error":"nothing to roll back to"})");
    back = protocol::decodeReply(R"({"ok":false,"error":"nothing to roll back to"})");
    CHECK_FALSE(back.accepted);
    CHECK(back.why == "nothing to roll back to");
    line = protocol::encodeReply(Command::Kind::Deploy, Reply{.accepted = true, .why = "queued after deploy #4"});
    CHECK(line == R"({"ok":true,"message":"queued after deploy #4"})");
    CHECK(protocol::decodeReply(line).why == "queued after deploy #4");
    CHECK(protocol::encodeReply(Command::Kind::Deploy, Reply{}) == R"({"ok":true})");
    // A newer init may say more: keys the client does not know are passed over.
    CHECK(protocol::decodeReply(R"({"ok":true,"news":[1,2]})").accepted);
}

TEST_CASE("a malformed reply or event is an error that names the field", "[control][protocol]") {
    auto replyError = [](const std::string& line) {
        try {
            protocol::decodeReply(line);
        } catch (const protocol::ProtocolError& e) {
            return std::string(e.what());
        }
        return std::string("(accepted)");
    };
    CHECK_THAT(replyError("ok"), Catch::StartsWith("the reply is not JSON: "));
    CHECK(replyError("{}") == "'ok' is missing");
    CHECK(replyError(R"({"ok":"yes"})") == "'ok' must be true or false, not a string");
    CHECK(replyError(R"({"ok":false})") == "'error' is missing");
    CHECK(replyError(R"({"ok":true,"status":{"phase":"dancing","main_pid":1,"uptime_ms":0}})") ==
          "'status.phase' is not a phase: 'dancing'");
    CHECK(replyError(R"({"ok":true,"status":{"phase":"running","main_pid":1,"uptime_ms":0,"deploy":{"stage":"idle","last":{"number":1,"trigger":"boot","outcome":"exploded"}}}})") ==
          "'status.deploy.last.outcome' is not a deployment outcome: 'exploded'");
    CHECK(replyError(R"({"ok":true,"history":[{"number":1,"trigger":"boot","outcome":"failed"},3]})") ==
          "'history[1]' must be an object, not a whole number");
    CHECK(replyError(R"({"ok":true,"history":{}})") == "'history' must be a list, not an object");
    CHECK_THROWS_WITH(protocol::decodeEvent(R"({"event":"party"})"), "unknown event 'party' (log, started, end)");
    CHECK_THROWS_WITH(protocol::decodeEvent(R"({"line":"x"})"), "'event' is missing");
    CHECK_THROWS_WITH(protocol::decodeEvent(R"({"event":"end","number":3})"), "'outcome' is missing");
}

TEST_CASE("the events that follow a wait go to JSON and back", "[control][protocol]") {
    CHECK(protocol::encodeLog("deploy #3 | starting webapp2") == R"({"event":"log","line":"deploy #3 | starting webapp2"})");
    auto log = protocol::decodeEvent(protocol::encodeLog("deploy #3: \"quoted\"\ttab"));
    CHECK(log.kind == protocol::StreamEvent::Kind::Log);
    CHECK(log.line == "deploy #3: \"quoted\"\ttab");

    std::string started = protocol::encodeEvent(DeployEvent{.kind = DeployEvent::Kind::Started, .number = 3});
    CHECK(started == R"({"event":"started","number":3})");
    CHECK(protocol::decodeEvent(started).kind == protocol::StreamEvent::Kind::Started);
    CHECK(protocol::decodeEvent(started).number == 3);

    std::string end = protocol::encodeEvent(DeployEvent{.kind = DeployEvent::Kind::Ended, .number = 3, .outcome = Outcome::TimedOut});
    CHECK(end == R"({"event":"end","number":3,"outcome":"timed out"})");
    auto e = protocol::decodeEvent(end);
    CHECK(e.kind == protocol::StreamEvent::Kind::End);
    CHECK(e.started);
    CHECK(e.number == 3);
    CHECK(e.outcome == Outcome::TimedOut);

    std::string never = protocol::encodeEvent(DeployEvent{.kind = DeployEvent::Kind::NotStarted, .why = "the init stops"});
    CHECK(never == R"({"event":"end","outcome":"not started","why":"the init stops"})");
    e = protocol::decodeEvent(never);
    CHECK(e.kind == protocol::StreamEvent::Kind::End);
    CHECK_FALSE(e.started);
    CHECK(e.why == "the init stops");
}

TEST_CASE("bytes that are not UTF-8 become U+FFFD, so that every line is JSON any parser takes", "[control][protocol]") {
    CHECK(protocol::validUtf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    CHECK(protocol::validUtf8("a\xff" "b") == "a\xef\xbf\xbd" "b");
    CHECK(protocol::validUtf8("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");         // overlong '/'
    CHECK(protocol::validUtf8("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); // a surrogate
    CHECK(protocol::validUtf8("cut \xe2\x82") == "cut \xef\xbf\xbd\xef\xbf\xbd");
    std::string line = protocol::encodeLog("deploy #1 | \xff\xfe binary\x01");
    auto back = protocol::decodeEvent(line); // the decoder refuses invalid UTF-8: this would throw
    CHECK(back.line == "deploy #1 | \xef\xbf\xbd\xef\xbf\xbd binary\x01");
    Status s;
    s.manager = "sup\xff";
    s.deploy = DeployStatus{};
    s.deploy->watcher_problem = "/etc/\xfenixproc";
    Reply r = protocol::decodeReply(statusLine(s));
    CHECK(r.status->manager == "sup\xef\xbf\xbd");
    CHECK(r.status->deploy->watcher_problem == "/etc/\xef\xbf\xbdnixproc");
}

// ---- the server ----

TEST_CASE("status over the socket is the dispatched snapshot in one line, then the connection closes", "[control][server]") {
    Served s;
    Command asked;
    s.dispatch = [&](Command c) {
        asked = c;
        Reply r;
        if (c.kind == Command::Kind::Status) r.status = fullStatus();
        return r;
    };
    s.start();
    Client c(s.path);
    REQUIRE(c.connected());
    auto started = Clock::now();
    REQUIRE(c.send("{\"command\":\"status\"}\n"));
    auto line = c.line();
    REQUIRE(line);
    CHECK(*line == statusLine(fullStatus()));
    CHECK(c.closedWithin(2s));
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    INFO("round trip in the test process: " << ms << " ms");
    CHECK(Clock::now() - started < 1s);
    CHECK(s.dispatched == 1);
    CHECK(asked.kind == Command::Kind::Status);
    CHECK_FALSE(asked.observer); // no wait, no observer
    CHECK(s.connectionsBecome(0));
    // A request without its newline, the client's side shut: still one request.
    Client d(s.path);
    REQUIRE(d.send(R"({"command":"history","count":2})"));
    ::shutdown(d.fd(), SHUT_WR);
    CHECK(d.line() == R"({"ok":true,"history":[]})");
    CHECK(asked.kind == Command::Kind::History);
    CHECK(asked.count == 2);
}

TEST_CASE("a malformed request gets one error line naming what is wrong, and the connection closes", "[control][server]") {
    Served s;
    s.start();
    CHECK(ask(s.path, "status") == R"({"ok":false,"error":"the request is not JSON: syntax error"})");
    CHECK(ask(s.path, R"({"command":"reboot"})") ==
          R"j({"ok":false,"error":"unknown command 'reboot' (status, deploy, rollback, history, health)"})j");
    Client c(s.path);
    REQUIRE(c.send("{\"command\":\"history\",\"count\":0}\n"));
    CHECK(c.line() == R"({"ok":false,"error":"'count' must be a whole number from 1 to 10000, not 0"})");
    CHECK(c.closedWithin(2s));
    CHECK(s.dispatched == 0);
    // A dispatch that throws is an error line too, not a dead init.
    s.dispatch = [](Command) -> Reply { throw std::runtime_error("boom"); };
    CHECK(ask(s.path, R"({"command":"status"})") == R"({"ok":false,"error":"internal error: boom"})");
    // A refusal from the init is passed on as it is.
    s.dispatch = [](Command) { return Reply{.accepted = false, .why = "no deployed generation to roll back to"}; };
    CHECK(ask(s.path, R"({"command":"rollback"})") == R"({"ok":false,"error":"no deployed generation to roll back to"})");
}

TEST_CASE("a request line longer than 4096 bytes is refused, one of 4096 is read", "[control][server]") {
    Served s;
    s.start();
    std::string request = R"({"command":"status"})";
    std::string padded = request + std::string(protocol::kMaxRequestLine - request.size(), ' ');
    REQUIRE(padded.size() == 4096);
    CHECK(ask(s.path, padded) == statusLine(fullStatus()));
    Client c(s.path);
    // Sent without waiting for the answer: the server stops reading at the limit, so the rest may
    // not be taken (the send then fails), but the error line comes.
    std::thread writer([fd = c.fd()] {
        std::string huge(100000, 'x');
        [[maybe_unused]] auto n = ::send(fd, huge.data(), huge.size(), MSG_NOSIGNAL);
    });
    auto line = c.line();
    writer.join();
    CHECK(line == R"({"ok":false,"error":"request longer than 4096 bytes"})");
    CHECK(c.closedWithin(2s));
    CHECK(s.dispatched == 1);
}

TEST_CASE("a client that connects and never speaks is closed at the deadline, and another is served meanwhile", "[control][server]") {
    Served s(ControlServer::Limits{.request_deadline = 400ms});
    s.start();
    auto connected = Clock::now();
    Client silent(s.path);
    REQUIRE(silent.connected());
    REQUIRE(s.connectionsBecome(1));
    auto asked = Clock::now();
    CHECK(ask(s.path, R"({"command":"status"})") == statusLine(fullStatus()));
    CHECK(Clock::now() - asked < 300ms); // not behind the silent one
    auto line = silent.line(3s);
    auto waited = Clock::now() - connected;
    CHECK(line == R"({"ok":false,"error":"no request within 0.4 s"})");
    CHECK(silent.closedWithin(1s));
    CHECK(waited >= 400ms);
    CHECK(waited < 2s);
    CHECK(s.connectionsBecome(0));
}

TEST_CASE("100 clients at once are all answered, and the server serves the next one after them", "[control][server]") {
    Served s;
    s.start();
    constexpr int kClients = 100;
    std::vector<std::string> answers(kClients);
    std::vector<std::thread> threads;
    std::atomic<int> go{0};
    for (int i = 0; i < kClients; ++i) {
        threads.emplace_back([&, i] {
            while (go.load() == 0) std::this_thread::yield(); // all together
            answers[i] = ask(s.path, R"({"command":"status"})");
        });
    }
    go = 1;
    for (auto& t : threads) t.join();
    int served = 0, busy = 0;
    for (const auto& a : answers) {
        if (a == statusLine(fullStatus())) ++served;
        else if (a.starts_with(R"({"ok":false,"error":"busy: 64 connections are served now)")) ++busy;
        else FAIL_CHECK("unexpected answer: " << a);
    }
    INFO(served << " served, " << busy << " told the server is busy");
    CHECK(served + busy == kClients);
    CHECK(served >= 64);
    CHECK(s.connectionsBecome(0));
    CHECK(ask(s.path, R"({"command":"status"})") == statusLine(fullStatus()));
}

TEST_CASE("beyond the connection cap a client is refused at once, and a silent one gives way after a second", "[control][server]") {
    Served s(ControlServer::Limits{.max_sessions = 2});
    s.start();
    Client first(s.path), second(s.path);
    REQUIRE(s.connectionsBecome(2));
    auto since = Clock::now();
    CHECK(ask(s.path, R"({"command":"status"})") == R"({"ok":false,"error":"busy: 2 connections are served now; try again"})");
    // After a second of silence the oldest connection is closed for a newcomer.
    std::this_thread::sleep_until(since + 1100ms);
    CHECK(ask(s.path, R"({"command":"status"})") == statusLine(fullStatus()));
    CHECK(first.line() == R"({"ok":false,"error":"closed: no request yet, and other clients are waiting"})");
    CHECK(first.closedWithin(1s));
    // The second still waits for its request, and is served.
    REQUIRE(second.send("{\"command\":\"health\"}\n"));
    CHECK(second.line() == R"({"ok":true})");
}

TEST_CASE("a peer that is neither root nor the init's user is refused with its uid", "[control][server]") {
    if (::geteuid() != 0) {
        WARN("not root: cannot connect as another user");
        SUCCEED("skipped");
        return;
    }
    Served s;
    s.start();
    // The socket is 0600 in a 0700 folder: another user could not even connect. Opened up here so
    // that the check that remains, SO_PEERCRED, is what refuses.
    fs::permissions(s.dir.path, fs::perms::owner_all | fs::perms::others_exec);
    fs::permissions(fs::path(s.path).parent_path().parent_path(), fs::perms::owner_all | fs::perms::others_exec);
    fs::permissions(fs::path(s.path).parent_path(), fs::perms::owner_all | fs::perms::others_exec);
    fs::permissions(s.path, fs::perms::all);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        std::string answer;
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) answer = "setuid failed";
        else answer = ask(s.path, R"({"command":"status"})");
        [[maybe_unused]] auto n = ::write(fds[1], answer.data(), answer.size());
        ::_exit(0);
    }
    ::close(fds[1]);
    std::string answer;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(answer == R"({"ok":false,"error":"permission denied: uid 65534 is neither root nor the init's user"})");
    CHECK(s.dispatched == 0);
    // Root still is.
    CHECK(ask(s.path, R"({"command":"status"})") == statusLine(fullStatus()));
}

TEST_CASE("the socket is made 0600 in a folder made 0700, and removed by the server's end", "[control][server]") {
    TempFolder dir;
    boost::asio::io_context io;
    std::string path = dir.path + "/a/b/control.sock";
    mode_t old = ::umask(0); // the modes do not come from the umask
    auto server = std::make_unique<ControlServer>(io, path, [](Command) { return Reply{}; });
    std::string why;
    bool listening = server->listen(why);
    ::umask(old);
    REQUIRE(listening);
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    REQUIRE(::stat((dir.path + "/a/b").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(::stat((dir.path + "/a").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    server.reset();
    CHECK_FALSE(fs::exists(fs::symlink_status(path)));
    // The socket's own folder, made by it, goes too (as /run/nixproc-init after an init); the one
    // above stays (made for it, but perhaps shared by then).
    CHECK_FALSE(fs::exists(dir.path + "/a/b"));
    CHECK(fs::exists(dir.path + "/a"));
    // Not a file that replaced it meanwhile.
    server = std::make_unique<ControlServer>(io, path, [](Command) { return Reply{}; });
    REQUIRE(server->listen(why));
    fs::remove(path);
    std::ofstream(path) << "someone else's";
    server.reset();
    CHECK(fs::exists(path));
}

TEST_CASE("a stale socket is replaced, a live one and anything else are refused, and so is a folder others can write", "[control][server]") {
    TempFolder dir;
    boost::asio::io_context io;
    auto make = [&](const std::string& path) { return std::make_unique<ControlServer>(io, path, [](Command) { return Reply{}; }); };
    std::string path = dir.path + "/control.sock";
    std::string why;
    SECTION("a stale socket, left by an init that was killed") {
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path.c_str());
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        ::close(fd); // its file stays, nothing listens
        auto server = make(path);
        CHECK(server->listen(why));
        CHECK(why.empty());
        struct stat st {};
        REQUIRE(::lstat(path.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
    }
    SECTION("a live socket, another init's") {
        auto first = make(path);
        REQUIRE(first->listen(why));
        auto second = make(path);
        CHECK_FALSE(second->listen(why));
        CHECK(why == "control socket " + path + ": another process answers on it (another nixproc-init?): not replacing it");
        second.reset(); // does not remove the first one's socket
        CHECK(fs::exists(fs::symlink_status(path)));
        Client c(path); // the first still listens
        CHECK(c.connected());
    }
    SECTION("a file that is not a socket") {
        std::ofstream(path) << "data";
        auto server = make(path);
        CHECK_FALSE(server->listen(why));
        CHECK(why == "control socket " + path + ": something that is not a socket is there: not replacing it");
        CHECK(fs::file_size(path) == 4);
    }
    SECTION("a folder others can write") {
        fs::create_directory(dir.path + "/open");
        fs::permissions(dir.path + "/open", fs::perms::all);
        auto server = make(dir.path + "/open/control.sock");
        CHECK_FALSE(server->listen(why));
        CHECK(why == "control socket " + dir.path + "/open/control.sock: the folder " + dir.path + "/open is writable by others (mode 0777)");
    }
    SECTION("a path too long for a unix socket") {
        std::string long_path = dir.path + "/" + std::string(120, 's');
        auto server = make(long_path);
        CHECK_FALSE(server->listen(why));
        CHECK(why == "control socket " + long_path + ": longer than a unix socket path can be (107 bytes)");
    }
}

TEST_CASE("wait streams the deployment's own log lines in order and ends with its outcome", "[control][server]") {
    Served s;
    DeployObserver observer;
    Command asked;
    s.dispatch = [&](Command c) {
        asked = c;
        observer = c.observer;
        // Logged before the deployment has its number: kept, and sent once it is known.
        s.server->publishLog("deploy #7: asked by control");
        s.server->publishLog("deploy #6 | an older one's line");
        return Reply{};
    };
    s.start();
    Client c(s.path);
    REQUIRE(c.send("{\"command\":\"deploy\",\"wait\":true}\n"));
    CHECK(c.line() == R"({"ok":true})");
    CHECK(asked.kind == Command::Kind::Deploy);
    REQUIRE(asked.observer);
    s.onLoop([&] {
        observer(DeployEvent{.kind = DeployEvent::Kind::Started, .number = 7});
        s.server->publishLog("deploy #7: processes.nix changed");
        s.server->publishLog("deploy #70: not this one");
        s.server->publishLog("deploy #7 | switching \xff");
        s.server->publishLog("supervisord: unrelated");
        return 0;
    });
    CHECK(c.line() == R"({"event":"started","number":7})");
    CHECK(c.line() == R"({"event":"log","line":"deploy #7: asked by control"})");
    CHECK(c.line() == R"({"event":"log","line":"deploy #7: processes.nix changed"})");
    CHECK(c.line() == "{\"event\":\"log\",\"line\":\"deploy #7 | switching \xef\xbf\xbd\"}");
    CHECK(s.connections() == 1); // still following
    s.onLoop([&] {
        observer(DeployEvent{.kind = DeployEvent::Kind::Ended, .number = 7, .outcome = Outcome::Succeeded});
        s.server->publishLog("deploy #7: done in 0.1 s"); // logged right after telling the end
        return 0;
    });
    CHECK(c.line() == R"({"event":"log","line":"deploy #7: done in 0.1 s"})");
    CHECK(c.line() == R"({"event":"end","number":7,"outcome":"succeeded"})");
    CHECK(c.closedWithin(2s));
    CHECK(s.connectionsBecome(0));
    // Told after its client is gone: nothing happens.
    s.onLoop([&] {
        observer(DeployEvent{.kind = DeployEvent::Kind::Ended, .number = 7, .outcome = Outcome::Failed});
        return 0;
    });
    // Without wait, no observer.
    CHECK(ask(s.path, R"({"command":"deploy"})") == R"({"ok":true})");
    CHECK_FALSE(asked.observer);
}

TEST_CASE("wait for a deployment that never starts ends with why, and a refused one with the refusal", "[control][server]") {
    Served s;
    s.dispatch = [&](Command c) {
        // Told at once, inside dispatch: still after the reply on the wire.
        c.observer(DeployEvent{.kind = DeployEvent::Kind::NotStarted, .why = "the init is stopping"});
        return Reply{};
    };
    s.start();
    Client c(s.path);
    REQUIRE(c.send("{\"command\":\"rollback\",\"generation\":2,\"wait\":true}\n"));
    CHECK(c.line() == R"({"ok":true})");
    CHECK(c.line() == R"({"event":"end","outcome":"not started","why":"the init is stopping"})");
    CHECK(c.closedWithin(2s));

    s.dispatch = [&](Command) { return Reply{.accepted = false, .why = "no generation 2 of the profile"}; };
    Client d(s.path);
    REQUIRE(d.send("{\"command\":\"rollback\",\"generation\":2,\"wait\":true}\n"));
    CHECK(d.line() == R"({"ok":false,"error":"no generation 2 of the profile"})");
    CHECK(d.closedWithin(2s));
}

TEST_CASE("a waiting client that hangs up is forgotten, and the server's end closes those still waiting", "[control][server]") {
    Served s;
    s.dispatch = [](Command) { return Reply{}; };
    s.start();
    {
        Client gone(s.path);
        REQUIRE(gone.send("{\"command\":\"deploy\",\"wait\":true}\n"));
        CHECK(gone.line() == R"({"ok":true})");
        CHECK(s.connections() == 1);
    }
    CHECK(s.connectionsBecome(0));
    Client waiting(s.path);
    REQUIRE(waiting.send("{\"command\":\"deploy\",\"wait\":true}\n"));
    CHECK(waiting.line() == R"({"ok":true})");
    s.onLoop([&] {
        s.server.reset();
        return 0;
    });
    CHECK(waiting.closedWithin(2s));
    CHECK_FALSE(fs::exists(fs::symlink_status(s.path)));
}

TEST_CASE("a waiting client that does not read is dropped once too much waits for it", "[control][server]") {
    Served s(ControlServer::Limits{.max_queued = 64 * 1024});
    DeployObserver observer;
    s.dispatch = [&](Command c) {
        observer = c.observer;
        return Reply{};
    };
    s.start();
    Client c(s.path);
    int small = 4096;
    ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    REQUIRE(c.send("{\"command\":\"deploy\",\"wait\":true}\n"));
    REQUIRE(s.connectionsBecome(1));
    s.onLoop([&] {
        observer(DeployEvent{.kind = DeployEvent::Kind::Started, .number = 1});
        return 0;
    });
    // 4 MiB of lines for a client that reads none: far beyond the socket's buffers and the cap.
    std::string line = "deploy #1 | " + std::string(1000, 'y');
    for (int batch = 0; batch < 64 && s.connections() == 1; ++batch)
        s.onLoop([&] {
            for (int i = 0; i < 64; ++i) s.server->publishLog(line);
            return 0;
        });
    CHECK(s.connectionsBecome(0));
}
