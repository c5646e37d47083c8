#include "deploy/SwitchCommand.hpp"

#include <filesystem>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUpstreamStateDir = "/var";
constexpr const char* kUpstreamProfileName = "processes"; // tools/commonchecks: checkProfile

// The folder nixproc-<pm>-switch keeps profiles in when NIX_USER_PROFILE_DIR is not set
// (tools/commonchecks: composeProfileDir).
std::string upstreamProfileFolder(const std::map<std::string, std::string>& env) {
    return (fs::path(nixStateDir(env)) / "profiles").lexically_normal().string();
}

// A word as a POSIX shell reads it back: as it is when it holds nothing special, else quoted.
std::string shellWord(const std::string& word) {
    bool plain = !word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                         "0123456789_./:@%+,=-") == std::string::npos;
    if (plain) return word;
    std::string out = "'";
    for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

} // namespace

std::string nixStateDir(const std::map<std::string, std::string>& env) {
    auto it = env.find("NIX_STATE_DIR");
    return it != env.end() && !it->second.empty() ? it->second : "/nix/var/nix";
}

bool isUpstreamSwitch(const std::string& program) {
    std::string name = fs::path(program).filename().string();
    return name.size() > std::string("nixproc--switch").size() && name.starts_with("nixproc-") && name.ends_with("-switch");
}

SwitchInvocation switchInvocation(const Config& config, const ProcessManager& manager, const std::string& model_copy,
                                  std::map<std::string, std::string> env) {
    SwitchInvocation out;
    out.argv = config.deployCommand();
    const bool upstream = isUpstreamSwitch(out.argv.front());
    const bool disnix = config.process_manager == ManagerKind::Disnix;

    if (!disnix) {
        fs::path profile(config.profile);
        std::string folder = profile.parent_path().lexically_normal().string();
        std::string name = profile.filename().string();
        if (auto inherited = env.find("NIX_USER_PROFILE_DIR"); inherited != env.end() && inherited->second != folder)
            out.notes.push_back("NIX_USER_PROFILE_DIR=" + inherited->second + " from the environment is not given to the "
                                "switch: the profile is " + config.profile + " (the configuration's `profile`)");
        if (folder == upstreamProfileFolder(env)) env.erase("NIX_USER_PROFILE_DIR");
        else {
            env["NIX_USER_PROFILE_DIR"] = folder;
            out.profile_environment.push_back("NIX_USER_PROFILE_DIR=" + folder);
        }
        if (name != kUpstreamProfileName) out.profile_options = {"-p", name};
    }
    if (config.nixproc.state_dir != kUpstreamStateDir || config.runtimeDir() != Config{}.runtimeDir())
        out.profile_options.insert(out.profile_options.end(),
                                   {"--state-dir", config.nixproc.state_dir, "--runtime-dir", config.runtimeDir()});
    if (config.nixproc.force_disable_user_change) out.profile_options.push_back("--force-disable-user-change");
    for (auto& option : manager.switchOptions()) out.profile_options.push_back(option);
    if (upstream) {
        out.argv.insert(out.argv.end(), out.profile_options.begin(), out.profile_options.end());
        if (disnix) {
            out.rollback_command = "disnix-env --rollback";
        } else {
            for (const auto& kv : out.profile_environment) {
                auto eq = kv.find('=');
                out.rollback_command += kv.substr(0, eq + 1) + shellWord(kv.substr(eq + 1)) + " ";
            }
            out.rollback_command += fs::path(out.argv.front()).filename().string();
            for (const auto& option : out.profile_options) out.rollback_command += " " + shellWord(option);
            out.rollback_command += " --rollback";
        }
        for (const char* var : {"NIXPROC_STATE_DIR", "NIXPROC_RUNTIME_DIR", "NIXPROC_FORCE_DISABLE_USER_CHANGE"}) env.erase(var);
    }
    env["NIXPROC_PROCESSES"] = model_copy;
    for (const auto& kv : manager.deployEnvironment()) {
        auto eq = kv.find('=');
        env[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    }
    out.environment = environmentList(env);
    return out;
}

} // namespace nixproc
