// supervisord, started the way nix-processmgmt's images start it. It is ready when its unix
// control socket accepts connections; SIGHUP would make it restart every program, so the init
// never forwards it.
#include "manager/Backends.hpp"

#include "io/RegularFile.hpp"
#include "process/ExitStatus.hpp"

#include <csignal>
#include <cstdlib>
#include <filesystem>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

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

// What the init needs from supervisord.conf, read once (in check(), before anything starts).
struct SupervisordSettings {
    std::string socket; // [unix_http_server] file=, expanded and absolute; "" when absent
    bool logfile = false; // [supervisord] logfile= is set
    bool pidfile = false; // [supervisord] pidfile= is set
};

// `start` is the folder supervisord starts in: a relative path in its file is relative to it
// (supervisord normalises paths with os.path.abspath, ~ expanded).
SupervisordSettings readSupervisordConf(const std::string& file, const fs::path& start) {
    FileContent content = readRegularFile(file);
    if (!content.text) {
        std::string why = content.missing() ? "no such file" : content.error;
        throw ManagerError("supervisord: manager.config " + file + ": " + why, exit_code::kUsage);
    }
    // supervisord's `here`: os.path.abspath(os.path.dirname(file)), normalised without a trailing /.
    std::error_code ec;
    fs::path absolute = fs::absolute(file, ec); // manager.config is absolute already (the configuration says so)
    std::string here = (ec ? fs::path(file) : absolute).parent_path().lexically_normal().string();
    if (here.size() > 1 && here.back() == '/') here.pop_back();
    auto value = [&](const std::string& section, const std::string& key) {
        return expandSupervisordValue(iniValueIn(*content.text, section, key), here);
    };
    SupervisordSettings s;
    s.socket = value("unix_http_server", "file");
    if (s.socket.starts_with("~/"))
        if (const char* home = std::getenv("HOME")) s.socket = home + s.socket.substr(1);
    if (!s.socket.empty() && s.socket.front() != '/') s.socket = (start / s.socket).lexically_normal().string();
    s.logfile = !value("supervisord", "logfile").empty();
    s.pidfile = !value("supervisord", "pidfile").empty();
    return s;
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
        if (!settings().pidfile) argv.insert(argv.end(), {"--pidfile", "/var/run/supervisord.pid"});
        return argv;
    }

    std::optional<ReadinessProbe> readiness() const override {
        if (settings().socket.empty()) return std::nullopt;
        return ReadinessProbe{ReadinessProbe::Kind::UnixSocket, settings().socket};
    }

    bool forwards(int sig) const override { return sig != SIGHUP; }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"conf.d", "", ".conf"}; }

    std::vector<std::string> deployEnvironment() const override {
        return {"SUPERVISORD_CONF_DIR=" + std::filesystem::path(config_.manager.config).parent_path().string()};
    }

    void check() const override {
        if (settings().socket.empty())
            throw ManagerError("supervisord: " + config_.manager.config +
                                   ": no [unix_http_server] file=: the init needs the control socket to know when "
                                   "supervisord is ready (and the switch needs it for supervisorctl)",
                               exit_code::kUsage);
        ProcessManager::check();
    }

private:
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

std::unique_ptr<ProcessManager> makeSupervisord(const Config& config) { return std::make_unique<Supervisord>(config); }

} // namespace nixproc
