#include "deploy/SwitchCommand.hpp"

#include <algorithm>
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

std::optional<unsigned> generationOf(const std::string& target) {
    std::string file = fs::path(target).filename().string();
    constexpr std::string_view kSuffix = "-link";
    if (!file.ends_with(kSuffix)) return std::nullopt;
    file.resize(file.size() - kSuffix.size());
    auto dash = file.rfind('-');
    if (dash == std::string::npos || dash + 1 == file.size() || file.size() - dash > 10) return std::nullopt;
    unsigned n = 0;
    for (char c : file.substr(dash + 1)) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<unsigned>(c - '0');
    }
    return n;
}

ProfileGenerations profileGenerations(const std::string& profile) {
    ProfileGenerations out;
    fs::path path(profile);
    std::string stem = path.filename().string() + "-";
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(path.parent_path(), ec)) {
        std::string file = entry.path().filename().string();
        if (!file.starts_with(stem) || !file.ends_with("-link")) continue;
        auto g = generationOf(file);
        if (g && file == stem + std::to_string(*g) + "-link") out.numbers.push_back(*g);
        else out.strays.push_back(file);
    }
    std::sort(out.numbers.begin(), out.numbers.end());
    auto target = fs::read_symlink(path, ec);
    if (!ec) out.current = generationOf(target.string());
    return out;
}

// Upstream's operations (nix-processmgmt 0e9ec77, tools/commonchecks):
//  - `--rollback` (:138-147, :159-166, :190-192) takes the second-highest PROFILE-*-link, whatever
//    the profile link names, and runs the switch's own deploy step on it against the profile as
//    it is: the plan is the services' way back, and the profile gets a new generation.
//  - `--switch-generation N` is accepted by getopt but never acted on (the case arm reads
//    --switch-to-generation, e.g. nixproc-supervisord-switch.in:84 vs :105): it deploys the model.
//    So generation N is reached by making it the second-highest: nix-env --set to N's path, then
//    back to the current path (what runs), then --rollback.
//  - nixproc-sysvinit-switch's -p names only the deploy's profile (:122-124): its generation
//    operations always act on `processes`.
//  - nixproc-disnix-switch never sets the profile folder (:165-169): its --rollback never finds a
//    generation; Disnix's own disnix-env --rollback / --switch-to-generation N does it.
RollbackPlan rollbackPlan(const Config& config, const ProcessManager& manager, std::optional<unsigned> to,
                          std::map<std::string, std::string> env) {
    RollbackPlan plan;
    const std::string program = config.deployCommand().front();
    if (!isUpstreamSwitch(program)) {
        plan.refusal = "deploy.command " + program + " is no nixproc-*-switch: how it rolls back is unknown";
        return plan;
    }
    ProfileGenerations g = profileGenerations(config.profile);
    if (!g.strays.empty()) {
        plan.refusal = "beside " + config.profile + " is " + g.strays.front() +
                       ", which upstream's --rollback would take for a generation: not rolling back";
        return plan;
    }
    if (!g.current) {
        plan.refusal = config.profile + " has no generation yet: nothing to roll back to";
        return plan;
    }
    if (g.numbers.size() < 2) {
        plan.refusal = "generation " + std::to_string(*g.current) + " is the only one of " + config.profile + ": nothing to roll back to";
        return plan;
    }
    const unsigned previous = g.numbers[g.numbers.size() - 2];
    const bool current_is_highest = *g.current == g.numbers.back();
    plan.from = *g.current;
    plan.to = to.value_or(previous);
    if (std::find(g.numbers.begin(), g.numbers.end(), plan.to) == g.numbers.end()) {
        plan.refusal = config.profile + " has no generation " + std::to_string(plan.to);
        return plan;
    }
    if (plan.to == plan.from) {
        plan.refusal = "generation " + std::to_string(plan.to) + " is the current one of " + config.profile;
        return plan;
    }
    if (config.process_manager == ManagerKind::SysVinit && fs::path(config.profile).filename() != kUpstreamProfileName) {
        plan.refusal = "nixproc-sysvinit-switch --rollback acts on the profile `processes` whatever -p says "
                       "(nixproc-sysvinit-switch.in:122-124): it cannot roll back " + config.profile;
        return plan;
    }
    // The model is not what a rollback deploys: an empty NIXPROC_PROCESSES makes a misread option fail.
    plan.invocation = switchInvocation(config, manager, "", std::move(env));
    std::vector<std::string> rollback;
    if (config.process_manager == ManagerKind::Disnix) {
        rollback = to && (plan.to != previous || !current_is_highest)
                       ? std::vector<std::string>{"disnix-env", "--switch-to-generation", std::to_string(plan.to)}
                       : std::vector<std::string>{"disnix-env", "--rollback"};
        plan.invocation.steps.push_back(rollback);
        return plan;
    }
    rollback = plan.invocation.argv;
    rollback.push_back("--rollback");
    if (plan.to != previous || !current_is_highest) {
        std::error_code ec;
        fs::path folder = fs::path(config.profile).parent_path();
        std::string name = fs::path(config.profile).filename().string();
        auto target = fs::canonical(folder / (name + "-" + std::to_string(plan.to) + "-link"), ec);
        auto running = ec ? fs::path() : fs::canonical(config.profile, ec);
        if (ec) {
            plan.refusal = "generation " + std::to_string(plan.to) + " of " + config.profile + " leads nowhere (collected?)";
            return plan;
        }
        plan.invocation.steps.push_back({"nix-env", "-p", config.profile, "--set", target.string()});
        plan.invocation.steps.push_back({"nix-env", "-p", config.profile, "--set", running.string()});
    }
    plan.invocation.steps.push_back(rollback);
    return plan;
}

} // namespace nixproc
