#include "deploy/StateStore.hpp"

#include "io/FileWrite.hpp"
#include "io/PathTrust.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

namespace nixproc {
namespace {

[[noreturn]] void fail(const std::string& file, const std::string& step) {
    throw std::runtime_error("state file " + file + ": " + step + ": " + std::strerror(errno));
}

} // namespace

StateStore::StateStore(std::string dir) : dir_(std::move(dir)), file_(dir_ + "/state.yaml") {}

std::string StateStore::now() {
    auto t = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[40];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
    return buf;
}

void DeployState::add(DeploymentRecord record) {
    deployments.push_back(std::move(record));
    if (deployments.size() > kKeptDeployments)
        deployments.erase(deployments.begin(), deployments.end() - kKeptDeployments);
}

bool DeployState::lastUnfinished() const {
    return !deployments.empty() && (deployments.back().outcome == Outcome::Running || deployments.back().outcome == Outcome::Interrupted);
}

StateAccess StateStore::open(std::string& why) {
    // Missing parents 0755, the folder itself 0700, exactly: the umask (0 in some images) must
    // neither open them to others nor close them to the switch.
    for (std::size_t at = 1; at <= dir_.size(); ++at) {
        if (at != dir_.size() && dir_[at] != '/') continue;
        std::string folder = dir_.substr(0, at);
        mode_t mode = at == dir_.size() ? 0700 : 0755;
        if (::mkdir(folder.c_str(), mode) == 0) {
            ::chmod(folder.c_str(), mode);
        } else if (errno != EEXIST) {
            why = folder + ": create folder: " + std::strerror(errno);
            return StateAccess::Unusable;
        }
    }
    struct stat st {};
    if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        why = dir_ + ": not a folder";
        return StateAccess::Unusable;
    }
    if (auto untrusted = untrustedPath(dir_); !untrusted.empty()) {
        why = untrusted + ": whoever can write there can change what is deployed as root";
        return StateAccess::Unusable;
    }
    std::string path = dir_ + "/lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        why = path + ": " + std::strerror(errno);
        return StateAccess::Unusable;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        bool held = errno == EWOULDBLOCK;
        why = path + ": " + (held ? std::string("held by another nixproc-init") : std::strerror(errno));
        ::close(fd);
        return held ? StateAccess::HeldByAnother : StateAccess::Unusable;
    }
    lock_fd_ = fd; // kept open: the lock goes with the process
    return StateAccess::Ready;
}

DeployState StateStore::load() const {
    DeployState s;
    std::error_code ec;
    if (!std::filesystem::exists(file_, ec)) return s;
    try {
        YAML::Node root = YAML::LoadFile(file_);
        s.channel_configured = root["channel_configured"].as<bool>(false);
        s.bootstrapped = root["bootstrapped"].as<bool>(false);
        s.deployed_fingerprint = root["deployed_fingerprint"].as<std::string>("");
        s.rolled_back_fingerprint = root["rolled_back_fingerprint"].as<std::string>("");
        for (const auto& d : root["deployments"]) {
            DeploymentRecord r;
            r.number = d["number"].as<unsigned>();
            std::string trigger = d["trigger"].as<std::string>("");
            r.trigger = triggerNamed(trigger).value_or(Trigger::Boot); // a trigger this version does not know: as at boot
            r.fingerprint = d["fingerprint"].as<std::string>("");
            r.started = d["started"].as<std::string>("");
            r.ended = d["ended"].as<std::string>("");
            std::string outcome = d["outcome"].as<std::string>("");
            auto known = outcomeNamed(outcome);
            if (!known) throw std::runtime_error("state file " + file_ + ": deployment " + std::to_string(r.number) + ": unknown outcome '" + outcome + "'");
            r.outcome = *known;
            if (d["exit_code"] && !d["exit_code"].IsNull()) r.exit_code = d["exit_code"].as<int>();
            r.plan = d["plan"].as<std::string>("");
            if (d["generation"] && !d["generation"].IsNull()) r.generation = d["generation"].as<unsigned>();
            s.deployments.push_back(r);
        }
    } catch (const YAML::Exception& e) {
        throw std::runtime_error("state file " + file_ + ": cannot be read: " + e.what());
    }
    return s;
}

void StateStore::save(const DeployState& s) const {
    YAML::Emitter out;
    out << YAML::BeginMap << YAML::Key << "channel_configured" << YAML::Value << s.channel_configured
        << YAML::Key << "bootstrapped" << YAML::Value << s.bootstrapped << YAML::Key << "deployed_fingerprint"
        << YAML::Value << s.deployed_fingerprint << YAML::Key << "rolled_back_fingerprint" << YAML::Value
        << s.rolled_back_fingerprint << YAML::Key << "deployments" << YAML::Value << YAML::BeginSeq;
    std::size_t skip = s.deployments.size() > kKeptDeployments ? s.deployments.size() - kKeptDeployments : 0;
    for (std::size_t i = skip; i < s.deployments.size(); ++i) {
        const DeploymentRecord& r = s.deployments[i];
        out << YAML::BeginMap << YAML::Key << "number" << YAML::Value << r.number << YAML::Key << "trigger"
            << YAML::Value << std::string(name(r.trigger)) << YAML::Key << "fingerprint" << YAML::Value << r.fingerprint << YAML::Key
            << "started" << YAML::Value << r.started << YAML::Key << "ended" << YAML::Value << r.ended << YAML::Key
            << "outcome" << YAML::Value << std::string(name(r.outcome)) << YAML::Key << "exit_code" << YAML::Value;
        if (r.exit_code) out << *r.exit_code;
        else out << YAML::Null;
        out << YAML::Key << "plan" << YAML::Value << r.plan << YAML::Key << "generation" << YAML::Value;
        if (r.generation) out << *r.generation;
        else out << YAML::Null;
        out << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
    std::string text = std::string(out.c_str()) + "\n";

    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
        errno = ec.value();
        fail(dir_, "create folder");
    }
    if (std::string why = replaceFile(file_, text); !why.empty()) throw std::runtime_error("state file " + why);
}

} // namespace nixproc
