// s6-rc: s6-svscan supervises the scan folder as the main child; once it reads its control FIFO,
// s6-rc-init lays the compiled database's longruns into the folder and `s6-rc -u change default`
// brings them up. At shutdown `s6-rc -bDa change` takes everything down before s6-svscan gets
// SIGTERM; s6-svscan would wait forever on a service that ignores SIGTERM, so the init's grace
// and SIGKILL bound it.
#include "manager/Backends.hpp"

#include "process/ExitStatus.hpp"

#include <filesystem>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

class S6Rc final : public ProcessManager {
public:
    explicit S6Rc(const Config& c) : config_(c) {}

    std::string name() const override { return "s6-rc"; }

    std::vector<std::string> command() const override {
        if (!config_.manager.command.empty()) return config_.manager.command;
        return {"s6-svscan", scanDir()};
    }

    std::optional<ReadinessProbe> readiness() const override {
        return ReadinessProbe{ReadinessProbe::Kind::FifoReader, scanDir() + "/.s6-svscan/control"};
    }

    // Nothing to initialise before the first deployment has built a database.
    std::vector<Step> startSteps() const override {
        std::error_code ec;
        if (!fs::is_directory(compiled(), ec)) return {};
        const auto& live = liveDir();
        return {{{"s6-rc-init", "-c", compiled(), "-l", live, scanDir()}, "s6-rc-init"},
                {{"s6-rc", "-l", live, "-u", "change", "default"}, "s6-rc -u change default"}};
    }

    std::vector<Step> stopSteps() const override {
        std::error_code ec;
        if (!fs::exists(liveDir(), ec)) return {};
        return {{{"s6-rc", "-l", liveDir(), "-bDa", "change"}, "s6-rc -bDa change"}};
    }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"etc/s6/sv", "", ""}; }

    std::vector<std::string> deployEnvironment() const override {
        return {"S6_RC_LIVE_DIR=" + liveDir(), "S6_SCAN_DIR=" + scanDir()};
    }

    void check() const override {
        for (const char* tool : {"s6-rc", "s6-rc-init"}) requireProgram(name(), tool);
        std::error_code ec;
        fs::create_directories(scanDir(), ec);
        if (ec) throw ManagerError("s6-rc: manager.scan_dir " + scanDir() + ": " + ec.message(), exit_code::kUsage);
        ProcessManager::check();
    }

private:
    std::string scanDir() const { return config_.runtimeDir() + "/service"; }
    std::string liveDir() const { return config_.runtimeDir() + "/s6-rc"; }
    std::string compiled() const { return config_.profile + "/etc/s6/rc/compiled"; }
    const Config& config_;
};

} // namespace

std::unique_ptr<ProcessManager> makeS6Rc(const Config& config) { return std::make_unique<S6Rc>(config); }

} // namespace nixproc
