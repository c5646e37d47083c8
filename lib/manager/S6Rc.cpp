// s6-rc as nix-processmgmt deploys it (tools/s6-rc/nixproc-s6-rc-deploy.in:298-337, s6-rc-checks):
// the profile holds the service definitions only (etc/s6/sv); nixproc-s6-rc-switch compiles them
// into STATE/etc/s6/rc/compiled-HASH and points STATE/etc/s6/rc/compiled at the database it
// deployed; the live state is RUNTIME/s6-rc and s6-svscan's scan folder RUNTIME/service
// (Config::runtimeDir()). The image compiles a boot database at /etc/s6/rc/compiled
// (nixproc/backends/s6-rc/image-steps/s6-rc-dynamic.nix:14-16).
//
// s6-svscan on the scan folder is the main child. Before it starts, the runtime and scan folders
// must be such that no one but root (or the init's user) can change them, and what a previous
// run of the same container left there (Docker keeps /run) is cleared: s6-rc-init cannot link its
// services over the old links ("File exists"), and s6-svscan would start the old services outside
// s6-rc. Only what s6-rc-init and s6-rc-update make, by name and kind, is cleared.
// Once s6-svscan reads its control FIFO, the start steps bring back the database deployed last
// (else the boot database; with neither, the first switch runs s6-rc-init itself):
// s6-rc-init, then `s6-rc -u change default`. At shutdown `s6-rc -bDa change` takes everything
// down before s6-svscan gets SIGTERM; s6-svscan would wait forever on a service that ignores
// SIGTERM, so the init's grace and SIGKILL bound it.
#include "manager/Backends.hpp"

#include "deploy/ProfileDiff.hpp"
#include "io/PathTrust.hpp"
#include "io/RegularFile.hpp"
#include "io/Text.hpp"
#include "process/ExitStatus.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <spdlog/spdlog.h>
#include <string_view>
#include <sys/stat.h>

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
    forEachLine(*content.text, [&](std::string_view line) {
        auto start = line.find_first_not_of(" \t");
        if (start != std::string_view::npos && line[start] != '#') names.emplace_back(line.substr(start));
    });
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
        parts.push_back(it->path().lexically_relative(folder).string() + "=" +
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

// What s6-rc-init and s6-rc-update make beside the live link LIVE, named LIVE:SUFFIX:XXXXXX with
// six characters of mkdtemp(3) (glibc: A-Z a-z 0-9) or of skalibs' mkltemp (the same with - and _:
// skalibs 2.15.1.0 src/librandom/random_name_from.c:8, src/libposixplz/mkfiletemp.c:14-18). No
// other name is theirs: `s6-rc:s6-rc-mydata` is someone else's.
struct LiveSibling {
    std::string_view suffix;
    bool folder; // a live folder: s6rc_livedir_create.c:22-26, with PROG as SUFFIX
    bool link;   // the temporary link atomic_symlink renames over LIVE, left when that failed
};
constexpr LiveSibling kLiveSiblings[] = {
    // The live folders of s6-rc-init (s6-rc-init.c:39, :97) and s6-rc-update (s6-rc-update.c:568,
    // :331); s6-rc-init's atomic_symlink(..., LIVE, PROG) (s6-rc-init.c:116) makes its temporary
    // link under the same name with skalibs 2.13 and 2.14 (src/libunixonacid/atomic_symlink.c:21-31).
    {"s6-rc-init", true, true},
    {"s6-rc-update", true, false},
    {"s6-rc-update_atomic_symlink", false, true}, // s6-rc-update.c:378, skalibs 2.13 and 2.14
    {"skalibs-atomic_symlink4", false, true},     // skalibs 2.15: src/libunixonacid/atomic_symlink4.c:34
};

bool tempNameChars(std::string_view x) {
    return x.size() == 6 && std::all_of(x.begin(), x.end(), [](char c) {
               return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
           });
}

// The kind of entry s6-rc makes under `name` beside the live link `base`, or nullptr.
const LiveSibling* liveSibling(std::string_view name, std::string_view base) {
    if (name.size() <= base.size() || !name.starts_with(base) || name[base.size()] != ':') return nullptr;
    name.remove_prefix(base.size() + 1);
    for (const auto& sibling : kLiveSiblings) {
        const auto n = sibling.suffix.size();
        if (name.size() == n + 7 && name.starts_with(sibling.suffix) && name[n] == ':' && tempNameChars(name.substr(n + 1)))
            return &sibling;
    }
    return nullptr;
}

// Where s6-rc's live state is, for the scan folder's links: s6-rc-init links each service as
// LIVE/servicedirs/NAME with LIVE as -l named it (s6_supervise_link), which must be absolute
// (s6-rc-init.c:66-67).
struct LiveState {
    std::vector<fs::path> folders; // the live link's folder, normalised: as configured, and resolved
    std::string base;              // the live link's name
    bool live_is_link;             // LIVE is s6-rc's symlink (or is gone); a real folder is not s6-rc's
};

// Whether a scan folder link's target lies in the live state: in LIVE (when it is s6-rc's) or in
// one of the live folders beside it. Compared once normalised, so `LIVE/../../elsewhere` is
// elsewhere: lexically, as the kernel follows it, since LIVE leads to a folder beside it.
bool inLiveState(const fs::path& target, const LiveState& state) {
    if (!target.is_absolute()) return false;
    const fs::path normal = target.lexically_normal();
    for (const auto& folder : state.folders) {
        const fs::path rel = normal.lexically_relative(folder);
        auto it = rel.begin();
        if (it == rel.end()) continue;
        const std::string first = it->string();
        if (first == "." || first == ".." || ++it == rel.end() || it->empty()) continue; // outside, or not inside a folder
        if (first == state.base) {
            if (state.live_is_link) return true;
        } else if (auto sibling = liveSibling(first, state.base); sibling && sibling->folder) {
            return true;
        }
    }
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

    std::string program() const override { return "s6-svscan"; }

    // s6-svscan (2.10.0.0 and later; Debian 12 has 2.11.3.2) catches CHLD, ALRM, ABRT, HUP, INT,
    // TERM, QUIT, USR1, USR2, PWR and WINCH (src/supervision/s6-svscan.c main, the set given to
    // selfpipe_trapset) and ignores PIPE; "Signals that are not in the above list are not caught
    // by s6-svscan and will have the system's default effect" (doc/s6-svscan.html, Signals).
    std::string withheld(int sig) const override {
        if (commandRole() != CommandRole::Manager) return "";
        return withheldUnlessKept(sig, {SIGCHLD, SIGALRM, SIGABRT, SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2,
                                        SIGPWR, SIGWINCH, SIGPIPE});
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
        if (fs::is_symlink(fs::symlink_status(live, ec))) {
            // Only kept when an s6-svscan already ran on the scan folder (see check()): it is current.
            // Anything else than s6-rc-init's symlink is not s6-rc's, and s6-rc-init says why it fails there.
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
        if (!fs::is_symlink(fs::symlink_status(liveDir(), ec))) return {}; // no live state of s6-rc's
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
        prepareFolders();
        clearPreviousS6RcRun(scanDir(), liveDir());
        ProcessManager::check();
    }

private:
    // s6-svscan runs, with the init's rights, whatever is in the scan folder, and s6-rc what the
    // live state in the runtime folder says: whoever else can change either, or a folder above
    // them, can run anything as root. Such a folder is refused, like sysvinit's rc folder, before
    // anything runs; as named and where it leads (/var/run -> ../run). The runtime folder may not
    // even be sticky and writable by others, as /tmp is: others could take LIVE's name there.
    // Missing folders are made 0755, whatever the umask (0 in some images).
    void prepareFolders() const {
        const std::string runtime = config_.runtimeDir(), scan = scanDir();
        auto refuse = [](const std::string& what, const std::string& folder, const std::string& why) {
            throw ManagerError("s6-rc: " + what + " " + folder + ": " + why +
                                   ": whoever can change it can have s6-svscan or s6-rc run anything with the init's rights",
                               exit_code::kUsage);
        };
        for (const auto& [what, folder] : {std::pair{"runtime folder", runtime}, std::pair{"scan folder", scan}})
            if (std::string why = untrustedPath(folder); !why.empty()) refuse(what, folder, why);
        for (std::size_t at = 1; at <= scan.size(); ++at) {
            if (at != scan.size() && scan[at] != '/') continue;
            const std::string folder = scan.substr(0, at);
            if (::mkdir(folder.c_str(), 0755) == 0) ::chmod(folder.c_str(), 0755);
            else if (errno != EEXIST)
                throw ManagerError("s6-rc: scan folder " + scan + ": create " + folder + ": " + std::strerror(errno),
                                   exit_code::kUsage);
        }
        for (const auto& [what, folder] : {std::pair{"runtime folder", runtime}, std::pair{"scan folder", scan}}) {
            std::error_code ec;
            auto real = fs::canonical(folder, ec);
            std::string why = ec ? ec.message() : !fs::is_directory(real, ec) ? "it is not a folder" : untrustedPath(folder);
            if (why.empty()) why = untrustedPath(real.string());
            if (!why.empty()) refuse(what, folder, why);
        }
    }

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
    const std::string control = scan_dir + "/.s6-svscan/control";
    if (ReadinessProbe{ReadinessProbe::Kind::FifoReader, control}.ready()) return cleared;
    if (struct stat st {}; ::stat(control.c_str(), &st) == 0 && !S_ISFIFO(st.st_mode))
        spdlog::warn("s6-rc: {} is {}, not a FIFO: no s6-svscan reads it, and s6-svscan refuses to start on it", control,
                     fileTypeName(st.st_mode));

    std::error_code ec;
    fs::path live = fs::path(live_dir).lexically_normal();
    if (!live.has_filename()) live = live.parent_path();
    LiveState state{{live.parent_path()}, live.filename().string(), true};
    // The links name the live folder as s6-rc-init was told it: the configured spelling, or the
    // same folder through a linked parent (/var/run -> ../run).
    auto parent = fs::weakly_canonical(live.parent_path(), ec);
    if (!ec && parent.lexically_normal() != live.parent_path()) state.folders.push_back(parent.lexically_normal());
    // s6-rc-init only ever makes LIVE a symlink (atomic_symlink, s6-rc-init.c:116): anything else
    // there is someone's, and s6-rc-init fails on it and says so.
    if (struct stat st {}; ::lstat(live.c_str(), &st) == 0 && !S_ISLNK(st.st_mode)) {
        state.live_is_link = false;
        spdlog::warn("s6-rc: {} is {}, not the symlink s6-rc-init makes: not s6-rc's live state, so it and the links "
                     "into it are left as they are, and s6-rc-init cannot make its live state there",
                     live.string(), fileTypeName(st.st_mode));
    }

    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(scan_dir, ec)) {
        std::error_code le;
        if (e.path().filename().string().starts_with(".") || !e.is_symlink(le)) continue;
        auto target = fs::read_symlink(e.path(), le);
        if (!le && inLiveState(target, state)) stale.push_back(e.path());
    }
    // The live link (a link, whatever it leads to: s6-rc-init renames its own over it), and the
    // live folders and temporary links s6-rc-init and s6-rc-update leave beside it (a failed
    // s6-rc-init removes the link and leaves the old folder). Without an s6-svscan, no live state
    // is current.
    for (const auto& e : fs::directory_iterator(live.parent_path(), ec)) {
        std::error_code te;
        const std::string name = e.path().filename().string();
        const bool link = e.is_symlink(te);
        const bool folder = !link && e.is_directory(te);
        if (name == state.base) {
            if (link) stale.push_back(e.path());
        } else if (auto sibling = liveSibling(name, state.base)) {
            if ((link && sibling->link) || (folder && sibling->folder)) stale.push_back(e.path());
        }
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
