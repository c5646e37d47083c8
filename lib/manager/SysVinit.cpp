// sysvinit without a sysvinit: the init itself runs the profile's rc scripts, as the compound
// proxy of upstream's image runs nixproc-sysvinit-runactivity (nix-processmgmt 0e9ec77,
// tools/sysvinit/nixproc-sysvinit-runactivity.in:96-113): `start` for each of `ls $rcpath/S*` at
// boot, `stop` for each of `ls $rcpath/S* | sort -r` at shutdown. The daemons they start are
// adopted by the init (PID 1 or subreaper), which reaps them like any orphan.
#include "manager/Backends.hpp"

#include "io/PathTrust.hpp"
#include "io/RegularFile.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

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

    // The switch deploys the rc folder of the runlevel the init starts and stops: without it,
    // upstream's switch asks `runlevel`, which says "unknown" in a container, and uses 3
    // (tools/sysvinit/sysvinitchecks).
    std::vector<std::string> switchOptions() const override { return {"--runlevel", std::to_string(config_.manager.runlevel)}; }

    bool switchStartsServices() const override { return true; }

private:
    std::string rcFolder() const { return "etc/rc.d/rc" + std::to_string(config_.manager.runlevel) + ".d"; }

    // The S* entries of the rc folder, in the order of `ls` in the C locale (upstream's images set
    // no LANG): byte by byte, which is how std::string compares. Each is run as root, so an entry
    // is only run when it leads to a regular file that no one but root (or the init's user) can
    // change, in a folder no one else can change either; the folder is opened without blocking
    // (a FIFO there is an error at once) and nothing in it is read.
    std::vector<Step> steps(const std::string& action) const {
        const fs::path folder = fs::path(config_.profile) / rcFolder();
        std::vector<std::string> names;
        std::error_code ec;
        fs::directory_iterator it(folder, ec);
        if (ec) {
            if (ec != std::errc::no_such_file_or_directory)
                spdlog::warn("rc folder {}: {}: no rc script run", folder.string(), ec.message());
            return {};
        }
        for (; it != fs::directory_iterator(); it.increment(ec)) {
            std::string name = it->path().filename().string();
            if (name.starts_with("S")) names.push_back(std::move(name));
        }
        std::sort(names.begin(), names.end());
        if (names.empty()) return {};

        // The folder as the profile names it (whoever could swap a link on the way) and where it leads.
        auto real_folder = fs::canonical(folder, ec);
        std::string why = ec ? ec.message() : untrustedPath(folder.string());
        if (why.empty()) why = untrustedPath(real_folder.string());
        if (!why.empty()) {
            spdlog::error("rc folder {}: {}: no rc script run", folder.string(), why);
            return {};
        }
        std::vector<Step> out;
        for (const auto& name : names) {
            const fs::path entry = folder / name;
            if (std::string why = unrunnable(entry); !why.empty()) {
                spdlog::error("rc {} not run: {}", entry.string(), why);
                continue;
            }
            out.push_back({{entry.string(), action}, "rc " + name + " " + action});
        }
        return out;
    }

    // Why the rc entry must not be run ("" when it can): what it leads to is not a regular file,
    // or someone else than root or the init's user can change it or a folder above it.
    static std::string unrunnable(const fs::path& entry) {
        struct stat st {};
        if (::stat(entry.c_str(), &st) != 0)
            return errno == ENOENT ? "it leads nowhere (a dangling link)" : std::string(std::strerror(errno));
        if (!S_ISREG(st.st_mode)) return "it is " + fileTypeName(st.st_mode) + ", not a script";
        std::error_code ec;
        auto real = fs::canonical(entry, ec);
        if (ec) return ec.message();
        if (std::string why = untrustedOwnerOrMode(real.string(), st.st_uid, st.st_mode); !why.empty()) return why;
        return untrustedPath(real.string()); // the folders above it
    }

    const Config& config_;
};

} // namespace

std::unique_ptr<ProcessManager> makeSysVinit(const Config& config) { return std::make_unique<SysVinit>(config); }

} // namespace nixproc
