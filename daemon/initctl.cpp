// nixproc-initctl: asks the running nixproc-init, through its control socket, what it is doing
// (status, history), whether it is healthy (health, wait-ready: Docker HEALTHCHECK and Kubernetes
// probes), and to deploy or roll back. A small blocking client: one connection per request, one
// JSON line each way (lib/control/Protocol.hpp). Fast by construction: with --socket or
// NIXPROC_INIT_CONTROL_SOCKET nothing is read but the reply, and no name is looked up.
#include "cli/CommandLine.hpp"
#include "config/Config.hpp"
#include "control/Protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

#ifndef NIXPROC_VERSION
#define NIXPROC_VERSION "unknown"
#endif

using namespace nixproc;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

namespace exit_status {
constexpr int kOk = 0;
constexpr int kFailed = 1;      // unhealthy, refused, or the deployment did not succeed
constexpr int kUsage = 2;
constexpr int kUnreachable = 3; // no socket, nothing answers, permission denied, no answer in time
} // namespace exit_status

constexpr const char* kUsageText = R"(Usage: nixproc-initctl [-c CONFIG] [--socket PATH] COMMAND [OPTIONS]

Asks the running nixproc-init through its control socket.

Commands:
  status [--json]                     what the init and its deployments are doing
  deploy [--wait]                     deploy the model now, even unchanged
  rollback [--to GENERATION] [--wait] switch back to the previous (or that) profile generation
  history [-n N]                      the last N deployments (default 10), oldest first
  health [--ready|--live]             exit 0 when ready (default) or live, 1 when not; one line why
  wait-ready [--timeout SECONDS]      wait until ready (default 60 s); exit 1 at the timeout

Options:
  -c, --config FILE   the init's configuration, for control.socket (default /etc/nixproc/init.yaml)
      --socket PATH   the control socket (default: NIXPROC_INIT_CONTROL_SOCKET, else control.socket
                      of the configuration, else /run/nixproc-init/control.sock)
      --wait          follow the deployment's log lines; exit 0 when it succeeded, 1 otherwise
  -h, --help          print this help and exit
      --version       print the version and exit

Exit status: 0 done (healthy, succeeded), 1 not healthy, refused or failed, 2 usage or
configuration error, 3 the init cannot be reached.
)";

// How long a reply may take: the init answers from memory, at once. A loop that does not answer
// within this is not live.
constexpr milliseconds kReplyTimeout{10000};
// A busy init (all its connections served) is asked again, for at most this long.
constexpr milliseconds kBusyRetryFor{2000};

struct Failure {
    int status;
    std::string message;
};

[[noreturn]] void fail(int status, const std::string& message) { throw Failure{status, message}; }

struct Options {
    std::optional<std::string> config_file;
    std::optional<std::string> socket;
    std::string command;
    bool json = false;
    bool wait = false;
    std::optional<unsigned> generation;
    unsigned count = 10;
    bool live = false;
    milliseconds timeout{60000};
    bool help = false, version = false;
};

unsigned positive(const std::string& text, const std::string& what, unsigned long long most = 4294967295ull) {
    char* end = nullptr;
    errno = 0;
    unsigned long long n = text.empty() || text[0] == '-' ? 0 : std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || !end || *end != '\0' || n < 1 || n > most)
        fail(exit_status::kUsage, what + " must be a whole number from 1 to " + std::to_string(most) + ", not '" + text + "'");
    return static_cast<unsigned>(n);
}

// Options go before or after the command; each command takes only its own.
Options parse(const std::vector<std::string>& args) {
    Options o;
    std::map<std::string, std::vector<std::string>> own{
        {"status", {"--json"}},           {"deploy", {"--wait"}},         {"rollback", {"--to", "--wait"}},
        {"history", {"-n"}},              {"health", {"--ready", "--live"}}, {"wait-ready", {"--timeout"}},
    };
    std::vector<std::string> given; // command options, checked once the command is known
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        std::optional<std::string> inline_value;
        if (a.starts_with("--") && a.find('=') != std::string::npos) {
            inline_value = a.substr(a.find('=') + 1);
            a = a.substr(0, a.find('='));
        }
        auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 >= args.size()) fail(exit_status::kUsage, a + " needs a value");
            return args[++i];
        };
        if (a == "-h" || a == "--help") o.help = true;
        else if (a == "--version") o.version = true;
        else if (a == "-c" || a == "--config") o.config_file = value();
        else if (a == "--socket") o.socket = value();
        else if (a == "--json") o.json = true, given.push_back(a);
        else if (a == "--wait") o.wait = true, given.push_back(a);
        else if (a == "--to") o.generation = positive(value(), "--to"), given.push_back(a);
        else if (a == "-n") o.count = positive(value(), "-n", 10000), given.push_back(a); // as the init takes
        else if (a == "--ready") o.live = false, given.push_back(a);
        else if (a == "--live") o.live = true, given.push_back(a);
        else if (a == "--timeout") o.timeout = parseSeconds(value(), "--timeout"), given.push_back(a);
        else if (a.starts_with("-") && a != "-") fail(exit_status::kUsage, "unknown option '" + a + "'");
        else if (o.command.empty()) o.command = a;
        else fail(exit_status::kUsage, "one command at a time: '" + o.command + "', then '" + a + "'");
    }
    if (o.help || o.version) return o;
    if (o.command.empty()) fail(exit_status::kUsage, "no command given");
    auto it = own.find(o.command);
    if (it == own.end()) fail(exit_status::kUsage, "unknown command '" + o.command + "'");
    for (const auto& g : given)
        if (std::find(it->second.begin(), it->second.end(), g) == it->second.end())
            fail(exit_status::kUsage, g + " is not an option of " + o.command);
    return o;
}

// --socket, else the environment, else the configuration (read only then), else its default.
std::string socketPath(const Options& o) {
    if (o.socket) {
        if (o.socket->empty()) fail(exit_status::kUsage, "--socket needs a path");
        return *o.socket;
    }
    if (const char* env = std::getenv("NIXPROC_INIT_CONTROL_SOCKET")) {
        if (*env == '\0') fail(exit_status::kUnreachable, "the control socket is off (NIXPROC_INIT_CONTROL_SOCKET is empty)");
        return env;
    }
    CommandLine cli;
    cli.config_file = o.config_file;
    // The init needs something to run; the client only reads the socket's path.
    cli.command = {"nixproc-initctl"};
    Config config;
    try {
        config = loadConfig(cli, environmentMap(environ));
    } catch (const ConfigError& e) {
        fail(exit_status::kUsage, std::string("configuration: ") + e.what());
    }
    if (config.control.socket.empty())
        fail(exit_status::kUnreachable,
             "the control socket is off (control.socket is empty in " + (config.source.empty() ? "the configuration" : config.source) + ")");
    return config.control.socket;
}

class Connection {
public:
    explicit Connection(const std::string& path) : path_(path) {
        if (path.size() >= sizeof(sockaddr_un::sun_path)) fail(exit_status::kUsage, "socket path too long: " + path);
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) fail(exit_status::kUnreachable, std::string("cannot make a socket: ") + std::strerror(errno));
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
            int e = errno;
            std::string hint = e == ENOENT || e == ECONNREFUSED ? " (is nixproc-init running with this control socket?)"
                               : e == EACCES                    ? " (only root and the init's user may ask)"
                                                                : "";
            fail(exit_status::kUnreachable, "cannot connect to " + path + ": " + std::strerror(e) + hint);
        }
    }
    ~Connection() { ::close(fd_); }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    void send(const std::string& line) {
        std::string bytes = line + "\n";
        for (std::size_t done = 0; done < bytes.size();) {
            ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            // The init may have answered already (and closed): its answer is still to be read.
            if (n < 0) return;
            done += static_cast<std::size_t>(n);
        }
    }

    // The next line; nullopt when the init closed the connection. `timeout` nullopt: no limit.
    std::optional<std::string> line(std::optional<milliseconds> timeout) {
        auto until = timeout ? Clock::now() + *timeout : Clock::time_point::max();
        for (;;) {
            if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
                std::string l = buffer_.substr(0, nl);
                buffer_.erase(0, nl + 1);
                return l;
            }
            if (closed_) return std::nullopt;
            int wait_ms = -1;
            if (timeout) {
                auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now()).count();
                if (left <= 0)
                    fail(exit_status::kUnreachable, "no answer from the init on " + path_ + " within " +
                                                        std::to_string(timeout->count() / 1000) + " s");
                wait_ms = static_cast<int>(left);
            }
            pollfd p{fd_, POLLIN, 0};
            int ready = ::poll(&p, 1, wait_ms);
            if (ready < 0 && errno != EINTR) fail(exit_status::kUnreachable, std::string("poll: ") + std::strerror(errno));
            if (ready <= 0) continue;
            char chunk[16384];
            ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) closed_ = true; // the end (a reset after the last line is an end too)
            else buffer_.append(chunk, static_cast<std::size_t>(n));
            if (buffer_.size() > (64u << 20)) fail(exit_status::kUnreachable, "a line of more than 64 MiB from " + path_);
        }
    }

private:
    std::string path_;
    int fd_ = -1;
    std::string buffer_;
    bool closed_ = false;
};

bool isBusy(const Reply& r) { return !r.accepted && r.why.starts_with("busy:"); }

// Sends the request and returns the reply (and the connection, for what follows with wait).
// A busy init is asked again for a moment; a refusal of who we are is "cannot reach".
struct Asked {
    std::unique_ptr<Connection> connection;
    std::string line;
    Reply reply;
};
Asked ask(const std::string& path, const protocol::Request& request, bool busy_is_an_answer = false) {
    auto until = Clock::now() + kBusyRetryFor;
    milliseconds pause{20};
    for (;;) {
        Asked a;
        a.connection = std::make_unique<Connection>(path);
        a.connection->send(protocol::encodeRequest(request));
        auto line = a.connection->line(kReplyTimeout);
        if (!line) fail(exit_status::kUnreachable, "the init closed the connection on " + path + " without an answer");
        a.line = *line;
        try {
            a.reply = protocol::decodeReply(*line);
        } catch (const protocol::ProtocolError& e) {
            fail(exit_status::kUnreachable, std::string("cannot read the init's answer: ") + e.what());
        }
        if (isBusy(a.reply) && Clock::now() + pause < until) {
            std::this_thread::sleep_for(pause); // the init is serving others: nothing to await but time
            pause *= 2;
            continue;
        }
        if (!a.reply.accepted && a.reply.why.starts_with("permission denied"))
            fail(exit_status::kUnreachable, a.reply.why);
        if (isBusy(a.reply) && !busy_is_an_answer) fail(exit_status::kUnreachable, a.reply.why);
        return a;
    }
}

// "850 ms", "12.4 s", "3 min 12 s", "2 h 3 min", "3 d 4 h".
std::string duration(milliseconds d) {
    long long ms = d.count();
    char text[64];
    if (ms < 1000) std::snprintf(text, sizeof text, "%lld ms", ms);
    else if (ms < 60'000) std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ms) / 1000.0);
    else if (ms < 3'600'000) std::snprintf(text, sizeof text, "%lld min %lld s", ms / 60'000, ms / 1000 % 60);
    else if (ms < 86'400'000) std::snprintf(text, sizeof text, "%lld h %lld min", ms / 3'600'000, ms / 60'000 % 60);
    else std::snprintf(text, sizeof text, "%lld d %lld h", ms / 86'400'000, ms / 3'600'000 % 24);
    return text;
}

std::string describe(const DeploymentStatus& d) {
    std::string s = "#" + std::to_string(d.number) + " " + std::string(name(d.outcome)) + " (" + std::string(name(d.trigger)) + ")";
    if (!d.ended.empty()) s += " " + d.ended;
    else if (!d.started.empty()) s += " started " + d.started;
    if (d.generation) s += ", generation " + std::to_string(*d.generation);
    if (!d.plan.empty()) s += ": " + d.plan;
    return s;
}

void printStatus(const Status& s) {
    auto row = [](const char* label, const std::string& text) { std::printf("%-14s%s\n", label, text.c_str()); };
    row("phase:", std::string(name(s.phase)) + ", up " + duration(s.uptime));
    std::string manager = s.manager == "none" ? "none, main child" : s.manager;
    if (s.main_pid > 0) manager += " (pid " + std::to_string(s.main_pid) + ")";
    if (s.manager_ready_for) manager += ", ready for " + duration(*s.manager_ready_for);
    else if (s.manager_given_up) manager += ", never answered its readiness probe";
    else manager += ", not ready yet";
    row("manager:", manager);
    Health ready = readiness(s);
    row("ready:", std::string(ready.ok ? "yes: " : "no: ") + ready.why);
    if (s.deploy) {
        const DeployStatus& d = *s.deploy;
        std::string stage(name(d.stage));
        if (d.current) {
            row("deployment:", "#" + std::to_string(d.current->number) + " (" + std::string(name(d.current->trigger)) + ") " +
                                   stage + " for " + duration(d.current_elapsed) +
                                   (d.current->plan.empty() ? "" : ": " + d.current->plan));
        } else {
            row("deployment:", "none running (" + stage + ")");
        }
        row("last:", d.last ? describe(*d.last) : "none yet");
        row("last success:", d.last_success ? describe(*d.last_success) : "none yet");
        row("model:", std::string(d.needed        ? "differs from what was last deployed"
                                  : d.rolled_back ? "undone by the rollback, not deployed again until it changes (or initctl deploy)"
                                                  : "deployed") +
                          (d.pending ? "; a follow-up deployment waits" : ""));
        row("watcher:", d.watching ? "watching" : d.watcher_problem.empty() ? "off" : "not watching: " + d.watcher_problem);
        std::string counts;
        for (const auto& [outcome, n] : d.by_outcome)
            if (n > 0) counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + std::string(name(outcome));
        row("deployments:", counts.empty() ? "none since the init started" : counts);
    } else {
        row("deployments:", "none (a plain init)");
    }
    row("orphans:", std::to_string(s.orphans_reaped) + " reaped");
}

void printHistory(const std::vector<DeploymentStatus>& history) {
    if (history.empty()) {
        std::puts("no deployment yet");
        return;
    }
    // Columns as wide as their widest value, two spaces apart.
    std::size_t number = 0, outcome = 0, trigger = 0, started = 0;
    for (const auto& d : history) {
        number = std::max(number, std::to_string(d.number).size() + 1);
        outcome = std::max(outcome, name(d.outcome).size());
        trigger = std::max(trigger, name(d.trigger).size());
        started = std::max(started, d.started.size());
    }
    for (const auto& d : history) {
        char text[512];
        std::snprintf(text, sizeof text, "%-*s  %-*s  %-*s  %-*s", static_cast<int>(number),
                      ("#" + std::to_string(d.number)).c_str(), static_cast<int>(outcome), std::string(name(d.outcome)).c_str(),
                      static_cast<int>(trigger), std::string(name(d.trigger)).c_str(), static_cast<int>(started), d.started.c_str());
        std::string out = text + (d.plan.empty() ? std::string() : "  " + d.plan);
        while (!out.empty() && out.back() == ' ') out.pop_back();
        std::puts(out.c_str());
    }
}

// After the reply to a request with wait: the deployment's lines as they come, then its end.
int follow(Connection& connection, const std::string& path) {
    std::optional<unsigned> number;
    for (;;) {
        auto line = connection.line(std::nullopt);
        if (!line)
            fail(exit_status::kUnreachable, "the init closed " + path + " before " +
                                                (number ? "deploy #" + std::to_string(*number) : std::string("the deployment")) +
                                                " ended");
        protocol::StreamEvent event;
        try {
            event = protocol::decodeEvent(*line);
        } catch (const protocol::ProtocolError& e) {
            fail(exit_status::kUnreachable, std::string("cannot read the init's event: ") + e.what());
        }
        switch (event.kind) {
        case protocol::StreamEvent::Kind::Log:
            std::printf("%s\n", event.line.c_str());
            std::fflush(stdout);
            break;
        case protocol::StreamEvent::Kind::Started: number = event.number; break;
        case protocol::StreamEvent::Kind::End:
            if (!event.started) {
                std::fprintf(stderr, "nixproc-initctl: the deployment did not start: %s\n", event.why.c_str());
                return exit_status::kFailed;
            }
            std::printf("deploy #%u %s\n", event.number, std::string(name(event.outcome)).c_str());
            return event.outcome == Outcome::Succeeded ? exit_status::kOk : exit_status::kFailed;
        }
    }
}

int run(const Options& o) {
    std::string path = socketPath(o);
    protocol::Request request;
    Command& c = request.command;
    if (o.command == "status") {
        c.kind = Command::Kind::Status;
        auto a = ask(path, request);
        if (!a.reply.accepted) fail(exit_status::kFailed, a.reply.why);
        if (o.json) std::puts(a.line.c_str());
        else if (a.reply.status) printStatus(*a.reply.status);
        else fail(exit_status::kFailed, "the init's answer has no status");
        return exit_status::kOk;
    }
    if (o.command == "history") {
        c.kind = Command::Kind::History;
        c.count = o.count;
        auto a = ask(path, request);
        if (!a.reply.accepted) fail(exit_status::kFailed, a.reply.why);
        printHistory(a.reply.history);
        return exit_status::kOk;
    }
    if (o.command == "health") {
        c.kind = Command::Kind::Health;
        c.live = o.live;
        // Busy serving others is an answer from a live loop: a liveness probe must not restart a
        // container because clients crowd its socket.
        auto a = ask(path, request, o.live);
        if (o.live && isBusy(a.reply)) {
            std::printf("live: the init answers (%s)\n", a.reply.why.c_str());
            return exit_status::kOk;
        }
        if (!a.reply.health) fail(exit_status::kFailed, a.reply.accepted ? "the init's answer has no health" : a.reply.why);
        std::printf("%s: %s\n", a.reply.health->ok ? (o.live ? "live" : "ready") : (o.live ? "not live" : "not ready"),
                    a.reply.health->why.c_str());
        return a.reply.health->ok ? exit_status::kOk : exit_status::kFailed;
    }
    if (o.command == "wait-ready") {
        c.kind = Command::Kind::Health;
        auto until = Clock::now() + o.timeout;
        milliseconds pause{50};
        std::string why = "no answer yet";
        for (;;) {
            try {
                auto a = ask(path, request);
                if (a.reply.health && a.reply.health->ok) {
                    std::printf("ready: %s\n", a.reply.health->why.c_str());
                    return exit_status::kOk;
                }
                why = a.reply.health ? a.reply.health->why : a.reply.why;
            } catch (const Failure& f) { // not there yet (the init starts, makes its socket)
                if (f.status == exit_status::kUsage) throw;
                why = f.message;
            }
            auto left = until - Clock::now();
            if (left <= milliseconds(0)) break;
            // Polled with a growing pause: nothing tells a client when the init becomes ready.
            std::this_thread::sleep_for(std::min<Clock::duration>(pause, left));
            pause = std::min(pause * 2, milliseconds(1000));
        }
        fail(exit_status::kFailed, "not ready after " + duration(o.timeout) + ": " + why);
    }
    // deploy, rollback
    c.kind = o.command == "deploy" ? Command::Kind::Deploy : Command::Kind::Rollback;
    c.generation = o.generation;
    request.wait = o.wait;
    auto a = ask(path, request);
    if (!a.reply.accepted) fail(exit_status::kFailed, o.command + " refused: " + a.reply.why);
    if (!o.wait) {
        std::printf("%s\n", a.reply.why.empty() ? (o.command + " asked").c_str() : a.reply.why.c_str());
        return exit_status::kOk;
    }
    if (!a.reply.why.empty()) std::printf("%s\n", a.reply.why.c_str());
    return follow(*a.connection, path);
}

} // namespace

// A closed stdin, stdout or stderr would be taken by the socket, and output meant for the
// terminal would go to the init: /dev/null holds their place.
void keepStandardDescriptors() {
    for (int fd = 0; fd <= 2; ++fd)
        if (::fcntl(fd, F_GETFD) < 0 && ::open("/dev/null", O_RDWR) < 0) std::_Exit(exit_status::kUnreachable);
}

// Output that could not be written is a failure (status >/dev/full), as coreutils' close_stdout
// says; a reader that went away (| head -1) is not worth a word.
int withOutputWritten(int status) {
    if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
    if (errno != EPIPE) std::fprintf(stderr, "nixproc-initctl: cannot write its output: %s\n", std::strerror(errno));
    return status == exit_status::kOk ? exit_status::kFailed : status;
}

int main(int argc, char** argv) {
    keepStandardDescriptors();
    try {
        Options o = parse({argv + 1, argv + argc});
        if (o.help) {
            std::fputs(kUsageText, stdout);
            return exit_status::kOk;
        }
        if (o.version) {
            std::puts("nixproc-initctl " NIXPROC_VERSION);
            return exit_status::kOk;
        }
        return withOutputWritten(run(o));
    } catch (const Failure& f) {
        std::fprintf(stderr, "nixproc-initctl: %s\n", f.message.c_str());
        if (f.status == exit_status::kUsage) std::fputs("Try 'nixproc-initctl --help'.\n", stderr);
        return f.status;
    } catch (const UsageError& e) {
        std::fprintf(stderr, "nixproc-initctl: %s\nTry 'nixproc-initctl --help'.\n", e.what());
        return exit_status::kUsage;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nixproc-initctl: %s\n", e.what());
        return exit_status::kUnreachable;
    }
}
