// supervisord, started the way nix-processmgmt's images start it (nixproc/backends/supervisord/
// image-steps/supervisord.nix: supervisord --nodaemon --configuration /etc/supervisor/supervisord.conf
// --logfile /var/log/supervisord.log --pidfile /var/run/supervisord.pid). It is ready when what its
// supervisord.conf configures answers: the unix control socket; else the inet port (upstream's own
// supervisord.conf has only `port = 127.0.0.1:9001`); else, with neither, a short while after it
// wrote its pidfile. It gets only the signals it handles (see withheld): SIGHUP would make it
// restart every program, and one it has no handler for would kill it.
#include "manager/Backends.hpp"
#include "manager/SupervisordConf.hpp"

#include "io/RegularFile.hpp"
#include "io/Text.hpp"
#include "process/CommandPath.hpp"
#include "process/ExitStatus.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <stdexcept>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

// With neither socket nor port: how long after supervisord wrote its pidfile it counts as ready.
// supervisord writes it once its servers are open and its signals set, just before its main loop
// (supervisor/supervisord.py:87-94), which starts the programs on its first pass.
constexpr std::chrono::seconds kPidfileSettle{1};

// nixproc-supervisord-deploy runs supervisorctl in the switch's working folder, which is the
// init's: / once the main child has started (Init leaves its start folder; the switch job has no
// folder of its own).
constexpr const char* kSwitchFolder = "/";

// The words of `text` between blanks (fields of /etc/hosts, the patterns of [include] files=).
std::vector<std::string> blankSeparatedWords(std::string_view text) {
    constexpr std::string_view blanks = " \t\n\v\f\r";
    std::vector<std::string> words;
    for (std::size_t at = 0; (at = text.find_first_not_of(blanks, at)) != std::string_view::npos;) {
        auto end = std::min(text.find_first_of(blanks, at), text.size());
        words.emplace_back(text.substr(at, end - at));
        at = end;
    }
    return words;
}

std::string singleQuoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// supervisor/datatypes.py:132 port_number: integer() (Python's int() of the text: blanks around,
// a sign, digits with single '_' between them), then 1 to 0xffff.
std::uint16_t portNumber(std::string_view text) {
    std::string t(trimBlanks(text));
    std::string_view digits = t;
    bool negative = false;
    if (!digits.empty() && (digits.front() == '+' || digits.front() == '-')) {
        negative = digits.front() == '-';
        digits.remove_prefix(1);
    }
    bool valid = !digits.empty() && std::isdigit(static_cast<unsigned char>(digits.front())) &&
                 std::isdigit(static_cast<unsigned char>(digits.back()));
    long value = 0;
    for (std::size_t i = 0; valid && i < digits.size(); ++i) {
        char c = digits[i];
        if (std::isdigit(static_cast<unsigned char>(c))) value = std::min(value * 10 + (c - '0'), 1'000'000L);
        else valid = c == '_' && std::isdigit(static_cast<unsigned char>(digits[i + 1])); // never last: checked above
    }
    if (!valid) throw std::invalid_argument("invalid literal for int() with base 10: " + singleQuoted(t));
    if (negative) value = -value;
    if (value < 1) throw std::invalid_argument(std::to_string(value) + " is below lower bound (1)");
    if (value > 0xffff) throw std::invalid_argument((value >= 1'000'000 ? t : std::to_string(value)) + " is above upper bound (65535)");
    return static_cast<std::uint16_t>(value);
}

// Sections supervisord takes for a server type: every one whose name starts with it
// (supervisor/options.py:1065-1075 _parse_servernames), in the order of the file.
std::vector<std::string> sectionsStartingWith(std::string_view ini_text, std::string_view type) {
    std::vector<std::string> out;
    forEachLine(ini_text, [&](std::string_view raw) {
        std::string_view line = trimBlanks(raw);
        if (line.size() < 2 || line.front() != '[') return;
        auto close = line.find(']');
        if (close == std::string_view::npos) return;
        std::string_view name = trimBlanks(line.substr(1, close - 1));
        if (name.starts_with(type)) out.emplace_back(name);
    });
    return out;
}

// supervisord's own expansions in a value of supervisord.conf (Python's `%(name)s` with the
// mapping supervisord passes): %(here)s, the folder of the file; %(ENV_NAME)s, from the
// environment, which supervisord inherits from the init; %% for a `%`. Anything else is left as
// written: supervisord itself will refuse it and say why.
std::string expandSupervisordValue(std::string_view value, const std::string& here) {
    std::string out;
    for (std::size_t at = 0; at < value.size();) {
        if (value.substr(at, 2) == "%%") {
            out += '%';
            at += 2;
            continue;
        }
        if (value.substr(at, 2) == "%(") {
            auto close = value.find(")s", at + 2);
            if (close != std::string_view::npos) {
                std::string name(value.substr(at + 2, close - at - 2));
                const char* env = name.starts_with("ENV_") ? std::getenv(name.c_str() + 4) : nullptr;
                if (name == "here" || env) {
                    out += name == "here" ? here : env;
                    at = close + 2;
                    continue;
                }
            }
        }
        out += value[at++];
    }
    return out;
}

// A path as supervisord normalises it (normalize_path: ~ expanded, made absolute against its
// working folder `start`, normalised).
std::string supervisordPath(std::string path, const fs::path& start) {
    if (path.starts_with("~/"))
        if (const char* home = std::getenv("HOME")) path = home + path.substr(1);
    if (!path.empty() && path.front() != '/') path = (start / path).string();
    std::string normal = fs::path(path).lexically_normal().string();
    if (normal.size() > 1 && normal.back() == '/') normal.pop_back();
    return normal;
}

// The numeric IPv4 address to connect to for the host of an [inet_http_server] port: supervisord
// binds an AF_INET socket to it (supervisor/http.py:521-529), "" being every interface. A name is
// looked up in /etc/hosts, as glibc's files source does; nixproc-init is linked statically, and a
// static glibc's getaddrinfo needs the NSS modules of its own version at run time, which a Nix
// image does not have. nullopt for a name that is not there (supervisord may find it in DNS).
std::optional<std::string> connectAddress(const std::string& host) {
    if (host.empty()) return "127.0.0.1";
    in_addr numeric{};
    if (::inet_pton(AF_INET, host.c_str(), &numeric) == 1)
        return numeric.s_addr == htonl(INADDR_ANY) ? std::string("127.0.0.1") : host;
    FileContent hosts = readRegularFile("/etc/hosts");
    std::optional<std::string> found;
    forEachLine(hosts.text ? std::string_view(*hosts.text) : std::string_view(), [&](std::string_view line) {
        if (found) return;
        std::vector<std::string> fields = blankSeparatedWords(line.substr(0, line.find('#')));
        if (fields.size() < 2 || ::inet_pton(AF_INET, fields[0].c_str(), &numeric) != 1) return;
        for (std::size_t i = 1; i < fields.size() && !found; ++i) {
            std::string name = fields[i];
            for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (name == host) found = fields[0];
        }
    });
    if (found) return found;
    if (host == "localhost") return "127.0.0.1";
    return std::nullopt;
}

// What the init needs from supervisord.conf, read once (in check(), before anything starts).
struct SupervisordSettings {
    std::string here;           // the file's folder, as supervisord's %(here)s
    fs::path start;             // supervisord's working folder: relative paths are relative to it
    std::string socket;         // [unix_http_server] file=, expanded and absolute; "" when absent
    std::string inet;           // [inet_http_server] port as written (expanded); "" when absent
    std::string inet_address;   // where to connect for it: "IPV4:PORT"; "" when absent or not found
    std::string inet_unusable;  // why there is a port but no inet_address
    std::string pidfile;        // [supervisord] pidfile=, expanded; "" when absent
    bool logfile = false;       // [supervisord] logfile= is set
    std::vector<std::string> includes; // [include] files=, each absolute
};

SupervisordSettings readSupervisordConf(const std::string& file, const fs::path& start) {
    FileContent content = readRegularFile(file);
    if (!content.text) {
        std::string why = content.missing() ? "no such file" : content.error;
        throw ManagerError("supervisord: manager.config " + file + ": " + why, exit_code::kUsage);
    }
    SupervisordSettings s;
    s.start = start;
    // supervisord's `here`: os.path.abspath(os.path.dirname(file)), normalised without a trailing /.
    std::error_code ec;
    fs::path absolute = fs::absolute(file, ec); // manager.config is absolute already (the configuration says so)
    s.here = supervisordPath((ec ? fs::path(file) : absolute).parent_path().string(), start);
    auto value = [&](const std::string& section, const std::string& key) {
        return expandSupervisordValue(iniValueIn(*content.text, section, key), s.here);
    };
    if (auto unix_servers = sectionsStartingWith(*content.text, "unix_http_server"); !unix_servers.empty()) {
        s.socket = value(unix_servers.front(), "file");
        if (!s.socket.empty()) s.socket = supervisordPath(s.socket, start);
    }
    if (auto inet_servers = sectionsStartingWith(*content.text, "inet_http_server"); !inet_servers.empty()) {
        const std::string& section = inet_servers.front();
        s.inet = value(section, "port");
        try {
            if (s.inet.empty()) throw std::invalid_argument("no port value");
            InetPort port = parseInetPort(s.inet);
            if (auto address = connectAddress(port.host)) s.inet_address = *address + ":" + std::to_string(port.port);
            else
                s.inet_unusable = "its [" + section + "] host " + singleQuoted(port.host) +
                                  " is not in /etc/hosts, and nixproc-init does not ask DNS (write an address there)";
        } catch (const std::invalid_argument& e) {
            throw ManagerError("supervisord: " + file + ": [" + section + "] port " + singleQuoted(s.inet) + ": " + e.what() +
                                   " (supervisord would not start with it either)",
                               exit_code::kUsage);
        }
    }
    s.logfile = !value("supervisord", "logfile").empty();
    s.pidfile = value("supervisord", "pidfile");
    for (const std::string& pattern : blankSeparatedWords(value("include", "files")))
        s.includes.push_back(pattern.front() == '/' ? pattern : s.here + "/" + pattern); // options.py: relative to here
    return s;
}

// The pidfile supervisord is told on its command line (-j FILE, -jFILE, --pidfile FILE,
// --pidfile=FILE), which wins over supervisord.conf's; "" when none.
std::string pidfileArgument(const std::vector<std::string>& argv) {
    std::string found;
    for (std::size_t i = 1; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if ((a == "-j" || a == "--pidfile") && i + 1 < argv.size()) found = argv[++i];
        else if (a.starts_with("--pidfile=")) found = a.substr(10);
        else if (a.starts_with("-j") && a.size() > 2) found = a.substr(2);
    }
    return found;
}

bool sameFolder(const fs::path& a, const fs::path& b) {
    std::error_code ea, eb;
    fs::path ca = fs::weakly_canonical(a, ea), cb = fs::weakly_canonical(b, eb);
    if (ea || eb) return a.lexically_normal() == b.lexically_normal();
    auto strip = [](fs::path p) { return p.has_filename() ? p : p.parent_path(); };
    return strip(ca) == strip(cb);
}

class Supervisord final : public ProcessManager {
public:
    explicit Supervisord(const Config& c) : config_(c) {}

    std::string name() const override { return "supervisord"; }

    std::vector<std::string> command() const override {
        if (!config_.manager.command.empty()) return config_.manager.command;
        std::vector<std::string> argv{"supervisord", "--nodaemon", "--configuration", config_.manager.config};
        // nix-processmgmt's flags, unless supervisord.conf says where these go itself.
        if (!settings().logfile) argv.insert(argv.end(), {"--logfile", "/var/log/supervisord.log"});
        if (settings().pidfile.empty()) argv.insert(argv.end(), {"--pidfile", "/var/run/supervisord.pid"});
        return argv;
    }

    std::optional<ReadinessProbe> readiness() const override {
        auto probe = answering();
        // Its handlers are installed after its socket listens (see ReadinessProbe::catches); a
        // COMMAND that replaced supervisord (a wrapper that does not exec it) catches what it likes.
        if (commandRole() == CommandRole::Manager) probe.catches = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR2};
        return probe;
    }

    ReadinessProbe answering() const {
        if (!settings().socket.empty()) return ReadinessProbe{ReadinessProbe::Kind::UnixSocket, settings().socket};
        if (!settings().inet_address.empty()) return ReadinessProbe{ReadinessProbe::Kind::TcpPort, settings().inet_address};
        // A pidfile older than this call (the Init asks before it starts supervisord) is a
        // previous run's, left behind by a SIGKILL. The coarse clock is the one file times come
        // from: a file written after now never has an earlier time.
        timespec now{};
        ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
        auto since = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec)));
        return ReadinessProbe{.kind = ReadinessProbe::Kind::Pidfile, .path = pidfile(), .settle = kPidfileSettle, .written_after = since};
    }

    std::string program() const override { return "supervisord"; }

    // supervisor 4.2.5 catches TERM, INT, QUIT (stop), HUP (restart), CHLD and USR2 (reopen its
    // logs) (supervisor/options.py:1252-1259 setsignals, supervisord.py:288-316 handle_signal);
    // Python ignores PIPE and XFSZ from its start. HUP is kept back all the same: it would restart
    // every program (it deploys instead). A COMMAND that replaced supervisord gets everything.
    std::string withheld(int sig) const override {
        if (commandRole() != CommandRole::Manager) return "";
        if (sig == SIGHUP) return "supervisord restarts every program on SIGHUP";
        return withheldUnlessKept(sig, {SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGUSR2, SIGPIPE, SIGXFSZ});
    }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"conf.d", "", ".conf"}; }

    // SUPERVISORD_CONF_DIR as the user gave it to the init (upstream's image sets /etc/supervisor);
    // without one, the folder of manager.config, whose conf.d/ supervisord.conf includes.
    std::vector<std::string> deployEnvironment() const override {
        if (auto dir = userConfDir()) return {"SUPERVISORD_CONF_DIR=" + *dir};
        return {"SUPERVISORD_CONF_DIR=" + fs::path(config_.manager.config).parent_path().string()};
    }

    void check() const override {
        settings();
        ProcessManager::check();
        refuseTakenPort();
        describeReadiness();
        warnAboutConfDir();
        warnAboutBareSupervisorctl();
    }

private:
    static std::optional<std::string> userConfDir() {
        const char* dir = std::getenv("SUPERVISORD_CONF_DIR");
        if (!dir || !*dir) return std::nullopt; // supervisordchecks treats empty as unset
        return std::string(dir);
    }

    std::string pidfile() const {
        std::string path = pidfileArgument(command());
        if (path.empty()) path = settings().pidfile;
        if (path.empty()) path = "supervisord.pid"; // options.py:644, in supervisord's working folder
        return supervisordPath(path, settings().start);
    }

    // Before supervisord starts, nothing may answer on its port: something that does (another
    // container of the same Kubernetes pod shares the network namespace, and upstream's port is
    // always 127.0.0.1:9001) would pass for supervisord, which then cannot bind and exits, and
    // the switch's supervisorctl would talk to the other one.
    void refuseTakenPort() const {
        const auto& s = settings();
        if (!s.socket.empty() || s.inet_address.empty()) return;
        if (!ReadinessProbe{ReadinessProbe::Kind::TcpPort, s.inet_address}.ready()) return;
        throw ManagerError("supervisord: " + s.inet_address + " ([inet_http_server] port of " + config_.manager.config +
                               ") already answers before supervisord starts: another program holds it (another "
                               "supervisord, or another container of the same pod); give this one another port, or "
                               "a [unix_http_server] socket",
                           exit_code::kUsage);
    }

    // Once, at start: which probe and why.
    void describeReadiness() const {
        const auto& s = settings();
        const std::string& conf = config_.manager.config;
        if (!s.socket.empty())
            spdlog::info("supervisord: ready when its control socket {} answers ([unix_http_server] of {})", s.socket, conf);
        else if (!s.inet_address.empty())
            spdlog::info("supervisord: ready when {} answers: {} has no [unix_http_server], and its [inet_http_server] port is {}",
                         s.inet_address, conf, s.inet);
        else if (!s.inet_unusable.empty())
            spdlog::info("supervisord: ready {} s after it writes its pidfile {}: {} has no [unix_http_server], and {}",
                         kPidfileSettle.count(), pidfile(), conf, s.inet_unusable);
        else
            spdlog::info("supervisord: ready {} s after it writes its pidfile {}: {} has neither [unix_http_server] nor "
                         "[inet_http_server] (supervisorctl cannot reach it either, nor can nixproc-supervisord-switch)",
                         kPidfileSettle.count(), pidfile(), conf);
    }

    // The switch links programs into $SUPERVISORD_CONF_DIR/conf.d (nixproc-supervisord-deploy.in:174):
    // only worth it when supervisord.conf includes that folder.
    void warnAboutConfDir() const {
        auto dir = userConfDir();
        if (!dir) return;
        fs::path folder = fs::path(config_.manager.config).parent_path();
        if (sameFolder(*dir, folder)) return;
        for (const auto& pattern : settings().includes)
            if (sameFolder(fs::path(pattern).parent_path(), fs::path(*dir) / "conf.d")) return;
        spdlog::warn("supervisord: SUPERVISORD_CONF_DIR={} (from the environment, kept for the switch) is not the folder of "
                     "manager.config {}, and its [include] does not read {}/conf.d: the programs the switch links there "
                     "will not run. Set SUPERVISORD_CONF_DIR={} or leave it unset.",
                     *dir, config_.manager.config, *dir, folder.string());
    }

    // nixproc-supervisord-deploy.in:183-184 runs `supervisorctl reread` and `supervisorctl update`
    // without -c: supervisorctl then reads the first supervisord.conf on its own search path.
    void warnAboutBareSupervisorctl() const {
        const char* path = std::getenv("PATH");
        auto ctl = resolveCommand("supervisorctl", path);
        if (ctl.error) {
            spdlog::warn("supervisord: no supervisorctl on PATH ({}): nixproc-supervisord-switch runs `supervisorctl reread` "
                         "and `supervisorctl update`, and will fail",
                         path ? path : "unset");
            return;
        }
        if (auto warning = bareSupervisorctlWarning(config_.manager.config, supervisorctlSearchPaths(ctl.path, kSwitchFolder)))
            spdlog::warn("supervisord: {}", *warning);
    }

    // Read on first use, which is check(), in the start folder and before the event loop runs:
    // the loop never reads supervisord.conf, and a change to it later changes nothing here.
    const SupervisordSettings& settings() const {
        if (!settings_) {
            std::error_code ec;
            fs::path start = fs::current_path(ec);
            if (ec) start = "/";
            if (!config_.manager.workdir.empty()) start /= config_.manager.workdir; // -w: supervisord's folder
            settings_ = readSupervisordConf(config_.manager.config, start);
        }
        return *settings_;
    }

    const Config& config_;
    mutable std::optional<SupervisordSettings> settings_;
};

} // namespace

InetPort parseInetPort(std::string_view value) {
    // supervisor/datatypes.py:134-150 inet_address
    InetPort out;
    std::string_view port = value;
    if (auto colon = value.rfind(':'); colon != std::string_view::npos) {
        port = value.substr(colon + 1);
        if (port.empty()) throw std::invalid_argument("no port number specified in " + singleQuoted(value));
        for (char c : value.substr(0, colon)) out.host += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.port = portNumber(port);
    } else {
        try {
            out.port = portNumber(port);
        } catch (const std::invalid_argument&) {
            throw std::invalid_argument("not a valid port number: " + singleQuoted(value));
        }
    }
    if (out.host == "*") out.host.clear();
    return out;
}

std::vector<std::string> supervisorctlSearchPaths(const std::string& argv0, const std::string& cwd) {
    // os.path.dirname twice, then os.path.join: a bare name has the prefix "" (relative paths).
    fs::path prefix = fs::path(argv0).parent_path().parent_path();
    auto inCwd = [&](const std::string& relative) { return (fs::path(cwd) / relative).lexically_normal().string(); };
    auto inPrefix = [&](const std::string& relative) {
        return prefix.empty() ? inCwd(relative) : (prefix / relative).lexically_normal().string();
    };
    return {inPrefix("etc/supervisord.conf"), inPrefix("supervisord.conf"), inCwd("supervisord.conf"),
            inCwd("etc/supervisord.conf"), "/etc/supervisord.conf", "/etc/supervisor/supervisord.conf"};
}

std::optional<std::string> bareSupervisorctlWarning(const std::string& config, const std::vector<std::string>& search) {
    std::string list; // each once: with / for the working folder, two of them are the same file
    for (auto it = search.begin(); it != search.end(); ++it)
        if (std::find(search.begin(), it, *it) == it) list += (list.empty() ? "" : ", ") + *it;
    for (const auto& candidate : search) {
        std::error_code ec;
        if (!fs::exists(candidate, ec)) continue; // os.path.exists: a broken link does not count
        if (fs::equivalent(candidate, config, ec)) return std::nullopt;
        return "a bare `supervisorctl` (as nixproc-supervisord-switch runs it, without -c) reads " + candidate +
               ", not manager.config " + config + " (it takes the first of " + list +
               " that exists): the switch's reread and update go to the supervisord that file names";
    }
    return "a bare `supervisorctl` (as nixproc-supervisord-switch runs it, without -c) finds no configuration file (it looks for " +
           list + ") and talks to its default server, http://localhost:9001, whatever manager.config " + config + " says";
}

std::unique_ptr<ProcessManager> makeSupervisord(const Config& config) { return std::make_unique<Supervisord>(config); }

} // namespace nixproc
