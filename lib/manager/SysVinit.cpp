// sysvinit without a sysvinit: the init itself runs the profile's rc scripts, `start` in the order
// of their S names at boot and `stop` in reverse at shutdown. The daemons they start are adopted
// by the init (PID 1 or subreaper), which reaps them like any orphan.
#include "manager/Backends.hpp"

#include <algorithm>
#include <filesystem>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

class SysVinit final : public ProcessManager {
public:
    explicit SysVinit(const Config& c) : config_(c) {}

    std::string name() const override { return "sysvinit"; }
    std::vector<std::string> command() const override { return config_.manager.command; }

    std::vector<Step> startSteps() const override { return steps("start"); }

    std::vector<Step> stopSteps() const override {
        auto s = steps("stop");
        std::reverse(s.begin(), s.end());
        return s;
    }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{rcFolder(), "S", ""}; }

    bool switchStartsServices() const override { return true; }

private:
    std::string rcFolder() const { return "etc/rc.d/rc" + std::to_string(config_.manager.runlevel) + ".d"; }

    std::vector<Step> steps(const std::string& action) const {
        std::vector<fs::path> scripts;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(fs::path(config_.profile) / rcFolder(), ec))
            if (e.path().filename().string().starts_with("S")) scripts.push_back(e.path());
        std::sort(scripts.begin(), scripts.end());
        std::vector<Step> out;
        for (const auto& s : scripts) out.push_back({{s.string(), action}, "rc " + s.filename().string() + " " + action});
        return out;
    }

    const Config& config_;
};

} // namespace

std::unique_ptr<ProcessManager> makeSysVinit(const Config& config) { return std::make_unique<SysVinit>(config); }

} // namespace nixproc
