// supervisord, started the way nix-processmgmt's images start it. It is ready when its unix
// control socket accepts connections; SIGHUP would make it restart every program, so the init
// never forwards it.
#include "manager/Backends.hpp"

#include "process/ExitStatus.hpp"

#include <csignal>
#include <filesystem>

namespace nixproc {
namespace {

class Supervisord final : public ProcessManager {
public:
    explicit Supervisord(const Config& c) : config_(c) {}

    std::string name() const override { return "supervisord"; }

    std::vector<std::string> command() const override {
        if (!config_.manager.command.empty()) return config_.manager.command;
        std::vector<std::string> argv{"supervisord", "--nodaemon", "--configuration", config_.manager.config};
        // nix-processmgmt's flags, unless supervisord.conf says where these go itself.
        const auto& conf = config_.manager.config;
        if (iniValue(conf, "supervisord", "logfile").empty()) argv.insert(argv.end(), {"--logfile", "/var/log/supervisord.log"});
        if (iniValue(conf, "supervisord", "pidfile").empty()) argv.insert(argv.end(), {"--pidfile", "/var/run/supervisord.pid"});
        return argv;
    }

    std::optional<ReadinessProbe> readiness() const override {
        std::string socket = iniValue(config_.manager.config, "unix_http_server", "file");
        if (socket.empty()) return std::nullopt;
        return ReadinessProbe{ReadinessProbe::Kind::UnixSocket, socket};
    }

    bool forwards(int sig) const override { return sig != SIGHUP; }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"conf.d", "", ".conf"}; }

    std::vector<std::string> deployEnvironment() const override {
        return {"SUPERVISORD_CONF_DIR=" + std::filesystem::path(config_.manager.config).parent_path().string()};
    }

    void check() const override {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(config_.manager.config, ec))
            throw ManagerError("supervisord: manager.config " + config_.manager.config + ": no such file",
                               exit_code::kUsage);
        if (iniValue(config_.manager.config, "unix_http_server", "file").empty())
            throw ManagerError("supervisord: " + config_.manager.config +
                                   ": no [unix_http_server] file=: the init needs the control socket to know when "
                                   "supervisord is ready (and the switch needs it for supervisorctl)",
                               exit_code::kUsage);
        ProcessManager::check();
    }

private:
    const Config& config_;
};

} // namespace

std::unique_ptr<ProcessManager> makeSupervisord(const Config& config) { return std::make_unique<Supervisord>(config); }

} // namespace nixproc
