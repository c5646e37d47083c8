#include "control/Protocol.hpp"

// Boost.JSON compiled here, once for the whole library (the client links this one too).
#include <boost/json/src.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>

namespace nixproc::protocol {
namespace json = boost::json;
namespace {

// Every value of each enum, for the names' inverse: a value added to an enum in Status.hpp must
// be added here too (the round-trip tests go through these lists).
constexpr std::array kPhases{InitPhase::Starting, InitPhase::Running,  InitPhase::StopSteps, InitPhase::SignalMain,
                             InitPhase::StopRest, InitPhase::Killing, InitPhase::Exiting};
constexpr std::array kStages{DeployStage::WaitingForManager, DeployStage::Idle,        DeployStage::Debouncing,
                             DeployStage::Bootstrapping,     DeployStage::Checking,    DeployStage::Switching,
                             DeployStage::RollingBack,       DeployStage::Collecting,  DeployStage::Stopped};
constexpr std::array kTriggers{Trigger::Boot,    Trigger::Watch,    Trigger::Signal,      Trigger::Retry,
                               Trigger::Control, Trigger::Rollback, Trigger::AutoRollback};
constexpr std::array kOutcomes{Outcome::Running,  Outcome::Succeeded,   Outcome::Failed,
                               Outcome::Refused,  Outcome::TimedOut,    Outcome::Interrupted};

constexpr const char* kNotStarted = "not started"; // an end event's outcome when it never started
constexpr std::uint64_t kMaxCount = 10000;         // history's count

// The socket's commands and their names on the wire.
constexpr std::array<std::pair<Command::Kind, const char*>, 5> kCommands{{
    {Command::Kind::Status, "status"},
    {Command::Kind::Deploy, "deploy"},
    {Command::Kind::Rollback, "rollback"},
    {Command::Kind::History, "history"},
    {Command::Kind::Health, "health"},
}};

std::string commandList() {
    std::string list;
    for (const auto& [kind, text] : kCommands) list += (list.empty() ? "" : ", ") + std::string(text);
    return list;
}

// What a JSON value is, for a message that says what was expected instead.
std::string kindOf(const json::value& v) {
    switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "true or false";
    case json::kind::int64:
    case json::kind::uint64: return "a whole number";
    case json::kind::double_: return "a number with a fraction";
    case json::kind::string: return "a string";
    case json::kind::array: return "a list";
    case json::kind::object: return "an object";
    }
    return "something else";
}

// A quoted piece of what the peer sent, short enough for a one-line error.
std::string quoted(std::string_view text) {
    constexpr std::size_t kMax = 40;
    std::string shown = validUtf8(text.substr(0, kMax));
    return "'" + shown + (text.size() > kMax ? "...'" : "'");
}

json::object parseObject(std::string_view line, const char* what) {
    json::parse_options options;
    options.max_depth = 16;
    boost::system::error_code ec;
    json::value v = json::parse(json::string_view(line.data(), line.size()), ec, {}, options);
    if (ec) throw ProtocolError(std::string(what) + " is not JSON: " + ec.message());
    if (!v.is_object()) throw ProtocolError(std::string(what) + " must be a JSON object, not " + kindOf(v));
    return std::move(v.as_object());
}

// Typed access to an object's members, each error naming the member's path ("status.deploy.stage").
class Fields {
public:
    Fields(const json::object& object, std::string path) : object_(object), path_(std::move(path)) {}

    const json::value* find(std::string_view key) const {
        auto it = object_.find(json::string_view(key.data(), key.size()));
        return it == object_.end() ? nullptr : &it->value();
    }
    std::string where(std::string_view key) const { return "'" + path_ + std::string(key) + "'"; }
    [[noreturn]] void fail(std::string_view key, const std::string& what) const { throw ProtocolError(where(key) + " " + what); }

    const json::value& required(std::string_view key) const {
        if (const auto* v = find(key)) return *v;
        fail(key, "is missing");
    }
    std::string string(std::string_view key) const {
        const auto& v = required(key);
        if (!v.is_string()) fail(key, "must be a string, not " + kindOf(v));
        return std::string(v.as_string().data(), v.as_string().size());
    }
    std::string optionalString(std::string_view key) const { return find(key) ? string(key) : std::string(); }
    bool boolean(std::string_view key) const {
        const auto& v = required(key);
        if (!v.is_bool()) fail(key, "must be true or false, not " + kindOf(v));
        return v.as_bool();
    }
    bool optionalBoolean(std::string_view key, bool otherwise) const { return find(key) ? boolean(key) : otherwise; }
    std::uint64_t whole(std::string_view key, std::uint64_t low, std::uint64_t high) const {
        const auto& v = required(key);
        std::optional<std::uint64_t> n;
        if (v.is_uint64()) n = v.as_uint64();
        if (v.is_int64() && v.as_int64() >= 0) n = static_cast<std::uint64_t>(v.as_int64());
        if (!n || *n < low || *n > high)
            fail(key, "must be a whole number from " + std::to_string(low) + " to " + std::to_string(high) + ", not " +
                          (v.is_number() ? json::serialize(v) : kindOf(v)));
        return *n;
    }
    std::int64_t signedWhole(std::string_view key) const {
        const auto& v = required(key);
        if (v.is_int64()) return v.as_int64();
        if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            return static_cast<std::int64_t>(v.as_uint64());
        fail(key, "must be a whole number, not " + kindOf(v));
    }
    // Null (or absent) is nullopt.
    std::optional<std::uint64_t> optionalWhole(std::string_view key, std::uint64_t high) const {
        const auto* v = find(key);
        if (!v || v->is_null()) return std::nullopt;
        return whole(key, 0, high);
    }
    // Null (or absent) is nullopt.
    std::optional<Fields> optionalObject(std::string_view key) const {
        const auto* v = find(key);
        if (!v || v->is_null()) return std::nullopt;
        if (!v->is_object()) fail(key, "must be an object or null, not " + kindOf(*v));
        return Fields(v->as_object(), path_ + std::string(key) + ".");
    }
    Fields object(std::string_view key) const {
        auto o = optionalObject(key);
        if (!o) fail(key, "is missing");
        return *o;
    }
    template <typename E, std::size_t N>
    E named(std::string_view key, const std::array<E, N>& values, const char* what) const {
        std::string text = string(key);
        for (E e : values)
            if (name(e) == text) return e;
        fail(key, "is not a " + std::string(what) + ": " + quoted(text));
    }
    // Refuses a member not in `known`: a misspelt option must not be taken for its default.
    void onlyKnown(std::initializer_list<std::string_view> known, const std::string& context) const {
        for (const auto& member : object_) {
            std::string_view key(member.key().data(), member.key().size());
            if (std::find(known.begin(), known.end(), key) == known.end())
                throw ProtocolError("unknown key " + quoted(key) + " in " + context);
        }
    }
    const json::object& raw() const { return object_; }

private:
    const json::object& object_;
    std::string path_;
};

json::string text(std::string_view s) { return json::string(validUtf8(s)); }

template <typename E>
json::string enumText(E e) { return text(name(e)); }

json::value deployment(const DeploymentStatus& d) {
    json::object o;
    o["number"] = d.number;
    o["trigger"] = enumText(d.trigger);
    o["outcome"] = enumText(d.outcome);
    o["started"] = text(d.started);
    o["ended"] = text(d.ended);
    o["plan"] = text(d.plan);
    if (d.generation) o["generation"] = *d.generation;
    else o["generation"] = nullptr;
    return o;
}

json::value optionalDeployment(const std::optional<DeploymentStatus>& d) {
    if (!d) return nullptr;
    return deployment(*d);
}

DeploymentStatus deploymentFrom(const Fields& f) {
    DeploymentStatus d;
    d.number = static_cast<unsigned>(f.whole("number", 0, std::numeric_limits<unsigned>::max()));
    d.trigger = f.named("trigger", kTriggers, "trigger");
    d.outcome = f.named("outcome", kOutcomes, "deployment outcome");
    d.started = f.optionalString("started");
    d.ended = f.optionalString("ended");
    d.plan = f.optionalString("plan");
    if (auto g = f.optionalWhole("generation", std::numeric_limits<unsigned>::max())) d.generation = static_cast<unsigned>(*g);
    return d;
}

std::optional<DeploymentStatus> optionalDeploymentFrom(const Fields& f, std::string_view key) {
    auto o = f.optionalObject(key);
    if (!o) return std::nullopt;
    return deploymentFrom(*o);
}

json::value deployStatus(const DeployStatus& d) {
    json::object o;
    o["stage"] = enumText(d.stage);
    json::value current = optionalDeployment(d.current);
    if (current.is_object()) current.as_object()["elapsed_ms"] = d.current_elapsed.count();
    o["current"] = std::move(current);
    o["last"] = optionalDeployment(d.last);
    o["last_success"] = optionalDeployment(d.last_success);
    o["pending"] = d.pending;
    o["needed"] = d.needed;
    o["rolled_back"] = d.rolled_back;
    o["watching"] = d.watching;
    o["watcher_problem"] = text(d.watcher_problem);
    json::object counts; // every outcome a deployment can end with, 0 included: scripts read fixed keys
    for (Outcome outcome : kOutcomes) {
        if (outcome == Outcome::Running) continue;
        auto it = d.by_outcome.find(outcome);
        counts[json::string_view(name(outcome).data(), name(outcome).size())] = it == d.by_outcome.end() ? 0u : it->second;
    }
    o["deployments_by_outcome"] = std::move(counts);
    return o;
}

DeployStatus deployStatusFrom(const Fields& f) {
    DeployStatus d;
    d.stage = f.named("stage", kStages, "deploy stage");
    if (auto current = f.optionalObject("current")) {
        d.current = deploymentFrom(*current);
        if (current->find("elapsed_ms")) d.current_elapsed = std::chrono::milliseconds(current->signedWhole("elapsed_ms"));
    }
    d.last = optionalDeploymentFrom(f, "last");
    d.last_success = optionalDeploymentFrom(f, "last_success");
    d.pending = f.optionalBoolean("pending", false);
    d.needed = f.optionalBoolean("needed", false);
    d.rolled_back = f.optionalBoolean("rolled_back", false);
    d.watching = f.optionalBoolean("watching", false);
    d.watcher_problem = f.optionalString("watcher_problem");
    if (auto counts = f.optionalObject("deployments_by_outcome")) {
        for (const auto& member : counts->raw()) {
            std::string_view key(member.key().data(), member.key().size());
            for (Outcome outcome : kOutcomes)
                if (name(outcome) == key)
                    d.by_outcome[outcome] = static_cast<unsigned>(counts->whole(key, 0, std::numeric_limits<unsigned>::max()));
        }
    }
    return d;
}

json::value status(const Status& s) {
    json::object o;
    o["phase"] = enumText(s.phase);
    o["manager"] = text(s.manager);
    o["main_pid"] = s.main_pid;
    if (s.manager_ready_for) o["manager_ready_for_ms"] = s.manager_ready_for->count();
    else o["manager_ready_for_ms"] = nullptr;
    o["manager_given_up"] = s.manager_given_up;
    o["uptime_ms"] = s.uptime.count();
    o["orphans_reaped"] = s.orphans_reaped;
    if (s.deploy) o["deploy"] = deployStatus(*s.deploy);
    else o["deploy"] = nullptr;
    return o;
}

Status statusFrom(const Fields& f) {
    Status s;
    s.phase = f.named("phase", kPhases, "phase");
    s.manager = f.optionalString("manager");
    s.main_pid = static_cast<pid_t>(f.signedWhole("main_pid"));
    if (auto ready = f.optionalWhole("manager_ready_for_ms", std::numeric_limits<std::int64_t>::max()))
        s.manager_ready_for = std::chrono::milliseconds(static_cast<std::int64_t>(*ready));
    s.manager_given_up = f.optionalBoolean("manager_given_up", false);
    s.uptime = std::chrono::milliseconds(f.signedWhole("uptime_ms"));
    if (f.find("orphans_reaped")) s.orphans_reaped = f.whole("orphans_reaped", 0, std::numeric_limits<std::uint64_t>::max());
    if (auto deploy = f.optionalObject("deploy")) s.deploy = deployStatusFrom(*deploy);
    return s;
}

std::string line(const json::object& o) { return json::serialize(o); }

} // namespace

std::string validUtf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    for (std::size_t i = 0; i < text.size();) {
        unsigned char b = byte(i);
        std::size_t length = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        bool ok = length > 0 && i + length <= text.size();
        char32_t code = length == 1 ? b : length == 2 ? (b & 0x1f) : length == 3 ? (b & 0x0f) : (b & 0x07);
        for (std::size_t k = 1; ok && k < length; ++k) {
            ok = (byte(i + k) & 0xc0) == 0x80;
            code = (code << 6) | (byte(i + k) & 0x3f);
        }
        // Overlong forms, surrogates and beyond U+10FFFF are not UTF-8 either.
        constexpr char32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
        if (ok && (code < kLeast[length] || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff)) ok = false;
        if (ok) {
            out.append(text.substr(i, length));
            i += length;
        } else {
            out += "\xef\xbf\xbd";
            ++i;
        }
    }
    return out;
}

std::string encodeRequest(const Request& request) {
    const Command& c = request.command;
    json::object o;
    auto kind = std::find_if(kCommands.begin(), kCommands.end(), [&](const auto& k) { return k.first == c.kind; });
    if (kind == kCommands.end()) throw ProtocolError("this command is not for the control socket");
    o["command"] = kind->second;
    switch (c.kind) {
    case Command::Kind::History: o["count"] = c.count; break;
    case Command::Kind::Health: o["live"] = c.live; break;
    case Command::Kind::Rollback:
        if (c.generation) o["generation"] = *c.generation;
        o["wait"] = request.wait;
        break;
    case Command::Kind::Deploy: o["wait"] = request.wait; break;
    default: break;
    }
    return line(o);
}

Request decodeRequest(std::string_view text) {
    json::object o = parseObject(text, "the request");
    Fields f(o, "");
    if (!f.find("command")) throw ProtocolError("the request has no 'command' (" + commandList() + ")");
    std::string command = f.string("command");
    auto kind = std::find_if(kCommands.begin(), kCommands.end(), [&](const auto& k) { return command == k.second; });
    if (kind == kCommands.end()) throw ProtocolError("unknown command " + quoted(command) + " (" + commandList() + ")");
    Request request;
    Command& c = request.command;
    c.kind = kind->first;
    std::string context = "a " + command + " request";
    switch (c.kind) {
    case Command::Kind::Status: f.onlyKnown({"command"}, context); break;
    case Command::Kind::History:
        f.onlyKnown({"command", "count"}, context);
        if (f.find("count")) c.count = static_cast<unsigned>(f.whole("count", 1, kMaxCount));
        break;
    case Command::Kind::Health:
        f.onlyKnown({"command", "live"}, context);
        c.live = f.optionalBoolean("live", false);
        break;
    case Command::Kind::Deploy:
        f.onlyKnown({"command", "wait"}, context);
        c.trigger = Trigger::Control;
        request.wait = f.optionalBoolean("wait", false);
        break;
    case Command::Kind::Rollback:
        f.onlyKnown({"command", "generation", "wait"}, context);
        c.trigger = Trigger::Rollback;
        if (f.find("generation")) c.generation = static_cast<unsigned>(f.whole("generation", 1, std::numeric_limits<unsigned>::max()));
        request.wait = f.optionalBoolean("wait", false);
        break;
    default: break;
    }
    return request;
}

std::string encodeReply(Command::Kind asked, const Reply& reply) {
    json::object o;
    o["ok"] = reply.accepted;
    // An answer to health is the answer, whether or not the init calls it a refusal too.
    if (reply.health) o["health"] = json::object{{"healthy", reply.health->ok}, {"why", text(reply.health->why)}};
    if (!reply.accepted) {
        o["error"] = text(reply.why);
        return line(o);
    }
    if (!reply.why.empty()) o["message"] = text(reply.why);
    if (reply.status) o["status"] = status(*reply.status);
    if (asked == Command::Kind::History || !reply.history.empty()) { // an empty list is an answer too
        json::array history;
        for (const auto& d : reply.history) history.push_back(deployment(d));
        o["history"] = std::move(history);
    }
    return line(o);
}

std::string encodeError(std::string_view why) { return encodeReply(Command::Kind::Status, Reply{.accepted = false, .why = std::string(why)}); }

// Lenient about keys it does not know (a newer init may say more), strict about those it does.
Reply decodeReply(std::string_view text) {
    json::object o = parseObject(text, "the reply");
    Fields f(o, "");
    Reply reply;
    reply.accepted = f.boolean("ok");
    if (auto h = f.optionalObject("health")) reply.health = Health{.ok = h->boolean("healthy"), .why = h->optionalString("why")};
    if (!reply.accepted) {
        reply.why = f.string("error");
        return reply;
    }
    reply.why = f.optionalString("message");
    if (auto s = f.optionalObject("status")) reply.status = statusFrom(*s);
    if (const auto* history = f.find("history"); history && !history->is_null()) {
        if (!history->is_array()) f.fail("history", "must be a list, not " + kindOf(*history));
        std::size_t i = 0;
        for (const auto& entry : history->as_array()) {
            std::string where = "history[" + std::to_string(i++) + "]";
            if (!entry.is_object()) throw ProtocolError("'" + where + "' must be an object, not " + kindOf(entry));
            reply.history.push_back(deploymentFrom(Fields(entry.as_object(), where + ".")));
        }
    }
    return reply;
}

std::string encodeLog(std::string_view log_line) {
    return line(json::object{{"event", "log"}, {"line", text(log_line)}});
}

std::string encodeEvent(const DeployEvent& event) {
    switch (event.kind) {
    case DeployEvent::Kind::Started: return line(json::object{{"event", "started"}, {"number", event.number}});
    case DeployEvent::Kind::Ended:
        return line(json::object{{"event", "end"}, {"number", event.number}, {"outcome", enumText(event.outcome)}});
    case DeployEvent::Kind::NotStarted:
        return line(json::object{{"event", "end"}, {"outcome", kNotStarted}, {"why", text(event.why)}});
    }
    return {};
}

StreamEvent decodeEvent(std::string_view text) {
    json::object o = parseObject(text, "the event");
    Fields f(o, "");
    std::string event = f.string("event");
    StreamEvent e;
    if (event == "log") {
        e.kind = StreamEvent::Kind::Log;
        e.line = f.string("line");
    } else if (event == "started") {
        e.kind = StreamEvent::Kind::Started;
        e.number = static_cast<unsigned>(f.whole("number", 0, std::numeric_limits<unsigned>::max()));
    } else if (event == "end") {
        e.kind = StreamEvent::Kind::End;
        if (f.string("outcome") == kNotStarted) {
            e.started = false;
            e.why = f.optionalString("why");
        } else {
            e.outcome = f.named("outcome", kOutcomes, "deployment outcome");
            e.number = static_cast<unsigned>(f.whole("number", 0, std::numeric_limits<unsigned>::max()));
        }
    } else {
        throw ProtocolError("unknown event " + quoted(event) + " (log, started, end)");
    }
    return e;
}

} // namespace nixproc::protocol
