// disnix, as nix-processmgmt's image drives it (nixproc/backends/disnix/image-steps/disnix-dynamic.nix,
// npm 0e9ec77): no long-running manager, but a compound proxy that runs
//   start: disnix-activate -o EMPTY PROFILE      stop: disnix-activate -o PROFILE EMPTY
// where PROFILE is Disnix's coordinator profile (Config::profile, resolved by lib/config), which IS
// the deployed manifest file (disnix nix/manifest.nix builds a file named manifest.xml, and
// disnix-deploy sets the profile to it with nix-env --set), and EMPTY is build-disnix-env.nix with
// exprFile = null: a version 2 manifest with no services and the same localhost target. The init
// runs those two steps itself; the processes Dysnomia starts are adopted and reaped by the init.
#include "manager/Backends.hpp"

#include "io/FileWrite.hpp"
#include "io/PathTrust.hpp"
#include "io/RegularFile.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <pugixml.hpp>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

// What the init needs of a manifest: what disnix-activate reads of it (run-activate.c:27 opens the
// new manifest with MANIFEST_SERVICE_MAPPINGS_FLAG | MANIFEST_INFRASTRUCTURE_FLAG).
struct Manifest {
    struct Service {
        std::string name, pkg;
    };
    struct Mapping {
        std::string service, container, target; // service: the key of a <service name="KEY">
    };
    std::map<std::string, Service> services;
    std::vector<Mapping> mappings;
    std::string infrastructure; // the <infrastructure> element, as XML
};

struct ManifestRead {
    std::optional<Manifest> manifest;
    bool missing = false; // no coordinator profile: nothing was ever deployed
    std::string error;    // why it cannot be used, naming the file
};

std::string text(const pugi::xml_node& parent, const char* child) { return parent.child(child).child_value(); }

std::string hostName() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "";
    return buf;
}

// "PROFILE (-> /nix/store/...-manifest.xml)": the profile is a chain of links.
std::string describePath(const std::string& path) {
    std::error_code ec;
    auto real = fs::canonical(path, ec);
    return ec || real == fs::path(path) ? path : path + " (-> " + real.string() + ")";
}

// Parsed as libmanifest parses it (libmanifest/manifest.c, servicemapping.c, manifestservice.c at
// disnix 8bbdcdf) and refused where disnix-activate refuses it (check_manifest). The file is read
// as a regular file, without blocking, size-capped: the profile could point at a FIFO.
ManifestRead readManifest(const std::string& path) {
    ManifestRead out;
    FileContent content = readRegularFile(path);
    if (content.missing()) {
        out.missing = true;
        return out;
    }
    auto fail = [&](const std::string& why) {
        out.error = describePath(path) + ": " + why;
        return out;
    };
    if (!content.text) return fail(content.error);

    pugi::xml_document doc;
    pugi::xml_parse_result parsed = doc.load_buffer(content.text->data(), content.text->size());
    if (!parsed) return fail(std::string("does not parse as XML: ") + parsed.description() + " at byte " + std::to_string(parsed.offset));
    pugi::xml_node root = doc.document_element();
    // check_version (manifest.c:36): the root's version attribute must be "2", whatever its name.
    if (std::string(root.attribute("version").value()) != "2")
        return fail("not a Disnix manifest: its root element <" + std::string(root.name()) +
                    (root.attribute("version") ? " version=\"" + std::string(root.attribute("version").value()) + "\"" : "") +
                    "> is not <manifest version=\"2\"> (disnix-activate: \"Disnix requires a manifest that uses the version 2 "
                    "structure!\")");

    Manifest m;
    for (pugi::xml_node s : root.child("services").children("service")) {
        Manifest::Service service{text(s, "name"), text(s, "pkg")};
        std::string key = s.attribute("name").value();
        if (key.empty() || service.name.empty() || service.pkg.empty() || text(s, "type").empty())
            return fail("service \"" + key + "\" lacks its key, <name>, <pkg> or <type> (check_manifest_service)");
        m.services.emplace(key, std::move(service));
    }
    std::set<std::string> targets;
    for (pugi::xml_node t : root.child("infrastructure").children("target")) targets.insert(t.attribute("name").value());
    for (pugi::xml_node e : root.child("serviceMappings").children("mapping")) {
        Manifest::Mapping mapping{text(e, "service"), text(e, "container"), text(e, "target")};
        if (!e.child("target")) mapping.target = hostName(); // parse_service_mapping's default: the coordinator's host name
        std::size_t n = m.mappings.size();
        if (mapping.service.empty() || mapping.container.empty())
            return fail("service mapping " + std::to_string(n) + " lacks <service> or <container> (check_service_mapping)");
        // check_service_mapping_array_references (manifest.c:149)
        if (!m.services.count(mapping.service))
            return fail("service mapping " + std::to_string(n) + " refers to service " + mapping.service + ", which <services> lacks");
        if (!targets.count(mapping.target))
            return fail("service mapping " + std::to_string(n) + " refers to target " + mapping.target + ", which <infrastructure> lacks");
        m.mappings.push_back(std::move(mapping));
    }
    if (pugi::xml_node infrastructure = root.child("infrastructure")) {
        std::ostringstream xml;
        infrastructure.print(xml, "", pugi::format_raw);
        m.infrastructure = xml.str();
    } else {
        m.infrastructure = "<infrastructure/>";
    }
    out.manifest = std::move(m);
    return out;
}

// build-disnix-env.nix with exprFile = null, as generatemanifest.xsl writes it: version 2, no
// services or mappings, the deployed manifest's targets. Activating the deployed manifest from it
// activates every mapping; activating it from the deployed one deactivates every mapping, which
// disnix-activate looks up in the NEW manifest's infrastructure (transition.c:243 passes
// manifest->targets_table) and skips, "since machine is no longer present", when it is not there
// (servicemapping-traverse.c:179). Its <profiles> stay empty: disnix-activate does not read them.
std::string emptyManifestFor(const Manifest& deployed) {
    return "<?xml version=\"1.0\"?>\n<manifest version=\"2\"><profiles/><services/>" + deployed.infrastructure +
           "<serviceMappings/><snapshotMappings/></manifest>\n";
}

// The folder of our own for the empty manifest when the state folder cannot hold it.
constexpr const char* kEmptyName = "disnix-empty-manifest.xml";

class Disnix final : public ProcessManager {
public:
    explicit Disnix(const Config& c) : config_(c) {}
    ~Disnix() override {
        if (private_folder_.empty()) return;
        std::error_code ec;
        fs::remove_all(private_folder_, ec);
    }
    Disnix(const Disnix&) = delete;
    Disnix& operator=(const Disnix&) = delete;

    std::string name() const override { return "disnix"; }
    std::vector<std::string> command() const override { return config_.manager.command; }

    std::vector<Step> startSteps() const override {
        std::string empty = emptyManifest("activating");
        if (empty.empty()) return {};
        return {{{"disnix-activate", "-o", empty, config_.profile}, "disnix-activate"}};
    }

    std::vector<Step> stopSteps() const override {
        std::string empty = emptyManifest("deactivating");
        if (empty.empty()) return {};
        return {{{"disnix-activate", "-o", config_.profile, empty}, "disnix-activate (deactivate)"}};
    }

    // One instance per service mapping, named as its service's <name> (name@target/container when
    // one service is mapped more than once). Its identity is what Disnix compares across
    // generations (transition.c:216, a mapping is its service key, target and container; the key
    // hashes the service's name, type, package and dependencies): the same package restarted
    // because a dependency changed shows as changed, as Disnix will restart it.
    std::optional<ProfileSnapshot> inventory(const std::string& profile) const override {
        ManifestRead read = readManifest(profile);
        if (read.missing) return ProfileSnapshot{};
        if (!read.manifest) {
            spdlog::warn("disnix: no plan: {}", read.error);
            return std::nullopt;
        }
        std::map<std::string, int> uses;
        for (const auto& m : read.manifest->mappings) ++uses[read.manifest->services.at(m.service).name];
        ProfileSnapshot snapshot;
        for (const auto& m : read.manifest->mappings) {
            const auto& service = read.manifest->services.at(m.service);
            std::string name = uses[service.name] > 1 ? service.name + "@" + m.target + "/" + m.container : service.name;
            snapshot[name] = service.pkg + " in " + m.container + " on " + m.target + " (service " + m.service + ")";
        }
        return snapshot;
    }

    bool switchStartsServices() const override { return true; }

    void check() const override {
        requireProgram(name(), "disnix-activate");
        ProcessManager::check();
    }

private:
    // The empty manifest for the deployed one, written (again) when what it should say changed;
    // "" when nothing is deployed, nothing is mapped, or it cannot be written (logged).
    std::string emptyManifest(const char* doing) const {
        ManifestRead read = readManifest(config_.profile);
        if (read.missing) {
            spdlog::debug("disnix: no coordinator profile {}: nothing deployed yet", config_.profile);
            return "";
        }
        if (!read.manifest) {
            spdlog::error("disnix: {}; not {} it", read.error, doing);
            return "";
        }
        if (read.manifest->mappings.empty()) {
            spdlog::debug("disnix: {} maps no services: nothing to do", config_.profile);
            return "";
        }
        std::string content = emptyManifestFor(*read.manifest);
        std::string folder = emptyFolder();
        if (!folder.empty() && content == written_ && isOurFile(folder + "/" + kEmptyName)) return folder + "/" + kEmptyName;
        if (!folder.empty()) {
            std::string why = replaceFile(folder + "/" + kEmptyName, content);
            if (why.empty()) return remember(folder, content);
            if (folder == private_folder_) {
                spdlog::error("disnix: cannot write the empty manifest: {}; not {} {}", why, doing, config_.profile);
                return "";
            }
            usePrivateFolder(why);
        }
        if (private_folder_.empty()) {
            spdlog::error("disnix: no folder for the empty manifest; not {} {}", doing, config_.profile);
            return "";
        }
        std::string why = replaceFile(private_folder_ + "/" + kEmptyName, content);
        if (!why.empty()) {
            spdlog::error("disnix: cannot write the empty manifest: {}; not {} {}", why, doing, config_.profile);
            return "";
        }
        return remember(private_folder_, content);
    }

    std::string remember(const std::string& folder, const std::string& content) const {
        written_ = content;
        return folder + "/" + kEmptyName;
    }

    // The state folder, when it is a folder nobody else can write (what the empty manifest says
    // is activated at stop, as root); otherwise a private folder, made once.
    std::string emptyFolder() const {
        if (!private_folder_.empty()) return private_folder_;
        struct stat st {};
        if (::stat(config_.state_dir.c_str(), &st) != 0) {
            usePrivateFolder(config_.state_dir + ": " + std::strerror(errno));
        } else if (!S_ISDIR(st.st_mode)) {
            usePrivateFolder(config_.state_dir + ": not a folder");
        } else if (auto untrusted = untrustedPath(config_.state_dir); !untrusted.empty()) {
            usePrivateFolder(untrusted + ": whoever can write there could change what is activated as root");
        } else {
            return config_.state_dir;
        }
        return private_folder_;
    }

    void usePrivateFolder(const std::string& why) const {
        private_folder_ = makePrivateFolder("nixproc-init-disnix");
        std::string where = private_folder_.empty() ? std::string("nowhere: no private temporary folder (") + std::strerror(errno) + ")"
                                                    : private_folder_;
        written_.clear();
        spdlog::warn("disnix: state folder {}: {}; the empty manifest goes to {}", config_.state_dir, why, where);
    }

    // Still the regular file we wrote (not replaced by something else since).
    static bool isOurFile(const std::string& path) {
        struct stat st {};
        return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid();
    }

    const Config& config_;
    // Written from the const steps: what the init knows of the files it keeps for them.
    mutable std::string private_folder_; // ours, removed with the manager; "" while the state folder serves
    mutable std::string written_;        // the empty manifest's content as last written
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
