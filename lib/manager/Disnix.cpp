// disnix, as nix-processmgmt's image drives it: no long-running manager, but an activation of the
// profile's manifest against an empty one at start, and the reverse at stop. The processes
// Dysnomia starts are adopted and reaped by the init.
#include "manager/Backends.hpp"


#include <filesystem>
#include <fstream>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

class Disnix final : public ProcessManager {
public:
    explicit Disnix(const Config& c) : config_(c) {}

    std::string name() const override { return "disnix"; }
    std::vector<std::string> command() const override { return config_.manager.command; }

    std::vector<Step> startSteps() const override {
        if (!deployed()) return {};
        return {{{"disnix-activate", "-o", emptyManifest(), manifest()}, "disnix-activate"}};
    }

    std::vector<Step> stopSteps() const override {
        if (!deployed()) return {};
        return {{{"disnix-activate", "-o", manifest(), emptyManifest()}, "disnix-activate (deactivate)"}};
    }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"etc/disnix/services", "", ""}; }

    bool switchStartsServices() const override { return true; }

    void check() const override {
        requireProgram(name(), "disnix-activate");
        ProcessManager::check();
    }

private:
    std::string manifest() const { return config_.profile + "/manifest.xml"; }
    bool deployed() const {
        std::error_code ec;
        return fs::exists(manifest(), ec);
    }
    // A manifest with nothing in it: activating against it starts everything, to it stops all.
    std::string emptyManifest() const {
        auto path = fs::path(config_.state_dir) / "disnix-empty-manifest.xml";
        std::error_code ec;
        if (!fs::exists(path, ec)) {
            fs::create_directories(path.parent_path(), ec);
            std::ofstream(path) << "<?xml version=\"1.0\"?>\n<manifest version=\"2\">\n  <distribution/>\n"
                                   "  <activation/>\n  <snapshots/>\n  <infrastructure/>\n</manifest>\n";
        }
        return path.string();
    }
    const Config& config_;
};

class CommandOnly final : public ProcessManager {
public:
    explicit CommandOnly(const Config& c) : config_(c) {}
    std::string name() const override { return "none"; }
    std::vector<std::string> command() const override { return config_.manager.command; }

private:
    const Config& config_;
};

} // namespace

std::unique_ptr<ProcessManager> makeDisnix(const Config& config) { return std::make_unique<Disnix>(config); }
std::unique_ptr<ProcessManager> makeCommandOnly(const Config& config) { return std::make_unique<CommandOnly>(config); }

} // namespace nixproc
