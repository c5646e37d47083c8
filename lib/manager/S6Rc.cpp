// s6-rc as nix-processmgmt deploys it (tools/s6-rc/nixproc-s6-rc-deploy.in:298-337, s6-rc-checks):
// the profile holds the service definitions only (etc/s6/sv); nixproc-s6-rc-switch compiles them
// into STATE/etc/s6/rc/compiled-HASH and points STATE/etc/s6/rc/compiled at the database it
// deployed; the live state is RUNTIME/s6-rc and s6-svscan's scan folder RUNTIME/service
// (Config::runtimeDir()). The image compiles a boot database at /etc/s6/rc/compiled
// (nixproc/backends/s6-rc/image-steps/s6-rc-dynamic.nix:14-16).
//
// s6-svscan on the scan folder is the main child. Before it starts, what a previous run of the
// same container left there (Docker keeps /run) is cleared: s6-rc-init cannot link its services
// over the old links ("File exists"), and s6-svscan would start the old services outside s6-rc.
// Once s6-svscan reads its control FIFO, the start steps bring back the database deployed last
// (else the boot database; with neither, the first switch runs s6-rc-init itself):
// s6-rc-init, then `s6-rc -u change default`. At shutdown `s6-rc -bDa change` takes everything
// down before s6-svscan gets SIGTERM; s6-svscan would wait forever on a service that ignores
// SIGTERM, so the init's grace and SIGKILL bound it.
#include "manager/Backends.hpp"

#include "deploy/ProfileDiff.hpp"
#include "io/RegularFile.hpp"
#include "process/ExitStatus.hpp"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <spdlog/spdlog.h>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBootDatabase = "/etc/s6/rc/compiled";

// One entry of the profile's etc/s6/sv, with the files s6-rc-compile reads to form pipelines
// (s6-rc-compile.c:469-511): what nix-processmgmt writes for a process with a log service is a
// NAME-srv producer-for NAME-log, and a NAME-log consumer-for NAME-srv with pipeline-name NAME
// (create-longrun-service.nix:55-85, create-log-service-for-longrun-service.nix:15-36).
struct Definition {
    std::string type; // oneshot, longrun, bundle; "" when unreadable
    std::string producer_for;
    std::vector<std::string> consumer_for;
    std::string pipeline_name;
    std::string identity;
};

// A name list as s6-rc-compile reads one (add_namelist, s6-rc-compile.c:262-305): a name a line,
// blanks before it skipped, empty and `#` lines ignored.
std::vector<std::string> nameList(const std::string& path) {
    std::vector<std::string> names;
    FileContent content = readRegularFile(path, 64 * 1024);
    if (!content.text) return names;
    std::string_view text = *content.text;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        auto start = line.find_first_not_of(" \t");
        if (start == std::string_view::npos || line[start] == '#') continue;
        names.emplace_back(line.substr(start));
    }
    return names;
}

std::string firstName(const std::string& path) {
    auto names = nameList(path);
    return names.empty() ? "" : names.front();
}

// What a definition that is a folder of its own (not a link into the store, as buildEnv makes
// them) holds: its files' identities, bounded, each kept as a hash (a file's identity is its
// whole content, up to readRegularFile's cap).
std::string folderIdentity(const fs::path& folder) {
    std::vector<std::string> parts;
    std::error_code ec;
    auto it = fs::recursive_directory_iterator(folder, fs::directory_options::none, ec);
    for (std::size_t n = 0; !ec && it != fs::recursive_directory_iterator() && n < 256; it.increment(ec), ++n) {
        if (it.depth() > 8) it.disable_recursion_pending();
        if (it->is_directory(ec) && !it->is_symlink(ec)) continue;
        parts.push_back(fs::relative(it->path(), folder, ec).string() + "=" +
                        fmt::format("{:016x}", std::hash<std::string>{}(entryIdentity(it->path().string()))));
    }
    std::sort(parts.begin(), parts.end());
    std::string out = "folder:";
    for (const auto& p : parts) out += p + "\n";
    return out;
}

std::map<std::string, Definition> readDefinitions(const fs::path& sv) {
    std::map<std::string, Definition> defs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(sv, ec)) {
        std::string name = e.path().filename().string();
        if (name.starts_with(".")) continue;
        Definition d;
        auto dir = e.path();
        d.type = firstName((dir / "type").string());
        d.producer_for = firstName((dir / "producer-for").string());
        d.consumer_for = nameList((dir / "consumer-for").string());
        d.pipeline_name = firstName((dir / "pipeline-name").string());
        d.identity = e.is_symlink(ec) || !e.is_directory(ec) ? entryIdentity(dir.string()) : folderIdentity(dir);
        defs.emplace(std::move(name), std::move(d));
    }
    return defs;
}

// The process a definition belongs to: a longrun in a pipeline belongs to the pipeline's name,
// found by following producer-for to the last consumer (which s6-rc-compile makes a bundle of,
// s6-rc-compile.c:633-660); without pipeline files, upstream's names NAME-srv and NAME-log
// (create-longrun-service.nix:57-58) when both halves are there; otherwise its own name.
std::string processOf(const std::string& name, const std::map<std::string, Definition>& defs) {
    const Definition& d = defs.at(name);
    if (d.type == "longrun") {
        const Definition* last = &d;
        for (std::size_t hops = 0; hops <= defs.size() && !last->producer_for.empty(); ++hops) {
            auto next = defs.find(last->producer_for);
            if (next == defs.end()) break;
            last = &next->second;
        }
        if (last->producer_for.empty() && !last->consumer_for.empty() && !last->pipeline_name.empty())
            return last->pipeline_name;
    }
    for (auto [own, other] : {std::pair{"-srv", "-log"}, std::pair{"-log", "-srv"}}) {
        if (!name.ends_with(own)) continue;
        std::string base = name.substr(0, name.size() - std::string_view(own).size());
        if (!base.empty() && defs.contains(base + other)) return base;
    }
    return name;
}

// Whether `target` (a scan folder link's target) lies in a live folder named `live`, or in one
// of the live:PROG:XXXXXX folders s6-rc-init and s6-rc-update make beside it.
bool inLiveState(const std::string& target, const std::vector<std::string>& live_spellings) {
    for (const auto& live : live_spellings)
        if (target.starts_with(live + "/") || target.starts_with(live + ":")) return true;
    return false;
}

class S6Rc final : public ProcessManager {
public:
    S6Rc(const Config& c, std::string boot_database) : config_(c), boot_database_(std::move(boot_database)) {}

    std::string name() const override { return "s6-rc"; }

    std::vector<std::string> command() const override {
        if (!config_.manager.command.empty()) return config_.manager.command;
        return {"s6-svscan", scanDir()};
    }

    std::optional<ReadinessProbe> readiness() const override {
        return ReadinessProbe{ReadinessProbe::Kind::FifoReader, scanDir() + "/.s6-svscan/control"};
    }

    // s6-rc-init gets the database itself, resolved, as nixproc-s6-rc-deploy.in:333 passes
    // compiled-HASH and never the `compiled` link: s6-rc-init records what -c says as the live
    // state's database (s6rc_livedir_create.c:31-32) that every s6-rc call reads and locks
    // (s6-rc.c:527-591), and that must not change under it (doc/s6-rc-init.html), while the
    // switch re-points the link (deploy.in:337) and deletes the database it pointed at (:330).
    // Resolved, our live state is the one the switch's own s6-rc-init or s6-rc-update would make.
    std::vector<Step> startSteps() const override {
        std::error_code ec;
        const std::string live = liveDir();
        std::vector<Step> steps;
        if (fs::exists(fs::symlink_status(live, ec))) {
            // Only kept when an s6-svscan already ran on the scan folder (see check()): it is current.
            spdlog::info("s6-rc: {} exists, with the s6-svscan that already runs on {}", live, scanDir());
        } else if (auto db = database()) {
            steps.push_back({{"s6-rc-init", "-c", *db, "-l", live, scanDir()}, "s6-rc-init"});
        } else {
            spdlog::info("s6-rc: no database deployed in {} and no boot database at {}: the first deployment initialises s6-rc",
                         compiledLink(), boot_database_);
            return {};
        }
        steps.push_back({{"s6-rc", "-l", live, "-u", "change", "default"}, "s6-rc -u change default"});
        return steps;
    }

    std::vector<Step> stopSteps() const override {
        std::error_code ec;
        if (!fs::exists(fs::symlink_status(liveDir(), ec))) return {};
        return {{{"s6-rc", "-l", liveDir(), "-bDa", "change"}, "s6-rc -bDa change"}};
    }

    std::optional<ProfileLayout> layout() const override { return ProfileLayout{"etc/s6/sv", "", ""}; }

    // One name per process: a pipeline's services (NAME-srv, NAME-log) fold into the pipeline's
    // name, whose identity is its parts'; bundles (`default`) are not processes; oneshots and
    // longruns of their own keep their names.
    std::optional<ProfileSnapshot> inventory(const std::string& profile) const override {
        auto defs = readDefinitions(fs::path(profile) / "etc/s6/sv");
        std::map<std::string, std::vector<std::string>> parts;
        for (const auto& [name, d] : defs) {
            if (d.type == "bundle") continue;
            parts[processOf(name, defs)].push_back(name);
        }
        ProfileSnapshot snapshot;
        for (const auto& [process, names] : parts) {
            if (names.size() == 1 && names.front() == process) {
                snapshot[process] = defs.at(process).identity;
                continue;
            }
            std::string identity;
            for (const auto& n : names) identity += n + "=" + defs.at(n).identity + "\n"; // sorted: defs is a map
            snapshot[process] = identity;
        }
        return snapshot;
    }

    // No upstream tool reads anything else: the switch derives the live and scan folders from
    // --runtime-dir (s6-rc-checks:16-32), which SwitchCommand passes.
    std::vector<std::string> deployEnvironment() const override { return {}; }

    // Also prepares the runtime folders, the one hook that runs before s6-svscan starts.
    void check() const override {
        for (const char* tool : {"s6-rc", "s6-rc-init"}) requireProgram(name(), tool);
        std::error_code ec;
        fs::create_directories(scanDir(), ec);
        if (ec) throw ManagerError("s6-rc: scan folder " + scanDir() + ": " + ec.message(), exit_code::kUsage);
        clearPreviousS6RcRun(scanDir(), liveDir());
        ProcessManager::check();
    }

private:
    std::string scanDir() const { return config_.runtimeDir() + "/service"; }
    std::string liveDir() const { return config_.runtimeDir() + "/s6-rc"; }
    std::string compiledLink() const { return config_.nixproc.state_dir + "/etc/s6/rc/compiled"; }

    // The database deployed last (readlink -f of the `compiled` link, as nixproc-s6-rc-deploy.in:327
    // compares them), else the image's boot database.
    std::optional<std::string> database() const {
        std::error_code ec;
        if (fs::exists(fs::symlink_status(compiledLink(), ec))) {
            auto deployed = fs::canonical(compiledLink(), ec);
            if (!ec && fs::is_directory(deployed, ec)) {
                spdlog::info("s6-rc: live state from {}, the database deployed last", deployed.string());
                return deployed.string();
            }
            spdlog::warn("s6-rc: {} does not lead to a database", compiledLink());
        }
        auto boot = fs::canonical(boot_database_, ec);
        if (!ec && fs::is_directory(boot, ec)) {
            spdlog::info("s6-rc: live state from {}, the boot database", boot.string());
            return boot.string();
        }
        return std::nullopt;
    }

    const Config& config_;
    std::string boot_database_;
};

} // namespace

ClearedS6RcRun clearPreviousS6RcRun(const std::string& scan_dir, const std::string& live_dir) {
    ClearedS6RcRun cleared;
    // An s6-svscan holds the scan folder (it reads its control FIFO): its live state is current.
    if (ReadinessProbe{ReadinessProbe::Kind::FifoReader, scan_dir + "/.s6-svscan/control"}.ready()) return cleared;

    std::error_code ec;
    fs::path live = fs::path(live_dir).lexically_normal();
    if (!live.has_filename()) live = live.parent_path();
    // The links name the live folder as s6-rc-init was told it (s6_supervise_link, LIVE/servicedirs/NAME):
    // the configured spelling, or the same folder through a linked parent (/var/run -> ../run).
    std::vector<std::string> spellings{live.string()};
    auto parent = fs::weakly_canonical(live.parent_path(), ec);
    if (!ec && parent / live.filename() != live) spellings.push_back((parent / live.filename()).string());

    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(scan_dir, ec)) {
        std::error_code le;
        if (e.path().filename().string().starts_with(".") || !e.is_symlink(le)) continue;
        auto target = fs::read_symlink(e.path(), le);
        if (!le && inLiveState(target.string(), spellings)) stale.push_back(e.path());
    }
    // The live link, the folder it names and any other live:s6-rc-init:XXXXXX or
    // live:s6-rc-update:XXXXXX folder (a failed s6-rc-init removes the link and leaves the old
    // one). Without an s6-svscan, no live state is current.
    const std::string base = live.filename().string();
    for (const auto& e : fs::directory_iterator(live.parent_path(), ec)) {
        std::string name = e.path().filename().string();
        if (name == base || name.starts_with(base + ":s6-rc-")) stale.push_back(e.path());
    }
    for (const auto& p : stale) {
        std::error_code rm;
        fs::remove_all(p, rm); // a link itself, never what it points to
        if (rm) cleared.errors.push_back(p.string() + ": " + rm.message());
        else cleared.removed.push_back(p.string());
    }
    if (!cleared.removed.empty())
        spdlog::info("s6-rc: cleared what a previous run left: {} entries in {} and {}", cleared.removed.size(), scan_dir,
                     live.parent_path().string());
    for (const auto& r : cleared.removed) spdlog::debug("s6-rc: removed {}", r);
    for (const auto& e : cleared.errors) spdlog::warn("s6-rc: cannot remove {}", e);
    return cleared;
}

std::unique_ptr<ProcessManager> makeS6Rc(const Config& config) { return std::make_unique<S6Rc>(config, kBootDatabase); }

std::unique_ptr<ProcessManager> makeS6Rc(const Config& config, std::string boot_database) {
    return std::make_unique<S6Rc>(config, std::move(boot_database));
}

} // namespace nixproc
