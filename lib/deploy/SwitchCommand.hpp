#pragma once
// How the init runs nixproc-<pm>-switch: with the options and environment nix-processmgmt's tools
// take (tools/commonchecks, tools/*/nixproc-*-switch.in, tools/common/nixproc-build.in), so that
// what the configuration says reaches the switch the way upstream reads it.
#include "config/Config.hpp"
#include "manager/ProcessManager.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nixproc {

struct SwitchInvocation {
    std::vector<std::string> argv;
    std::vector<std::string> environment; // complete, KEY=VALUE
    // What an upstream switch is told beyond its defaults, which a user repeats to act on the same
    // profile (`NIX_USER_PROFILE_DIR=/srv/profiles nixproc-sysvinit-switch -p web --runlevel 3 --rollback`).
    std::vector<std::string> profile_environment; // KEY=VALUE
    std::vector<std::string> profile_options;     // appended to argv for an upstream switch
    // What of the init's environment the switch does not get as it was, and why (said once).
    std::vector<std::string> notes;
    // rollbackInvocation: the commands to run in order (each with `environment`); argv is unused.
    std::vector<std::vector<std::string>> steps;
};

// Nix's state folder as Nix and upstream's tools take it: $NIX_STATE_DIR, else /nix/var/nix
// (tools/commonchecks: checkNixStateDir).
std::string nixStateDir(const std::map<std::string, std::string>& environment);

// Whether `program` is one of nix-processmgmt's switches (its file name is nixproc-*-switch): only
// those get the upstream options; a deploy.command of another kind gets the environment alone.
bool isUpstreamSwitch(const std::string& program);

// The switch for `model_copy`, from the configuration and the init's environment:
//   argv: deploy.command + (for an upstream switch) -p NAME when the profile is not `processes`
//         (never for disnix, whose profile is fixed), --state-dir/--runtime-dir when they are not
//         upstream's /var and /var/run, --force-disable-user-change, the manager's switchOptions();
//   environment: NIXPROC_PROCESSES=model_copy; NIX_USER_PROFILE_DIR=the profile's folder unless it
//         is $NIX_STATE_DIR/profiles (then removed, so an inherited one cannot redirect it);
//         for an upstream switch, NIXPROC_STATE_DIR, NIXPROC_RUNTIME_DIR and
//         NIXPROC_FORCE_DISABLE_USER_CHANGE removed: they are options now, and nixproc-build.in:159-162
//         would turn NIXPROC_RUNTIME_DIR into stateDir, overriding --runtime-dir;
//         the manager's deployEnvironment().
SwitchInvocation switchInvocation(const Config& config, const ProcessManager& manager, const std::string& model_copy,
                                  std::map<std::string, std::string> environment);

// A profile's generations as the file system has them: PROFILE-N-link siblings, in rising order;
// `current` is the one the profile link names. Nothing is run.
struct ProfileGenerations {
    std::vector<unsigned> numbers;
    std::optional<unsigned> current;
    std::vector<std::string> strays; // PROFILE-*-link names that are no generation ("processes-old-3-link")
};
ProfileGenerations profileGenerations(const std::string& profile);
// The generation a link's target names: "processes-5-link" (or a path ending so) is 5.
std::optional<unsigned> generationOf(const std::string& link_target);

// How to go back to an earlier generation of the profile with upstream's own tools, the options
// and environment of the deployments; or why not (then `steps` is empty and `refusal` says why).
struct RollbackPlan {
    unsigned from = 0, to = 0;
    SwitchInvocation invocation; // its steps run in order, each with its environment
    std::string refusal;
};
// `to`: a generation, or none for upstream's "previous" (the second-highest generation, as
// commonchecks' determineLastProfileGenerationId picks it).
RollbackPlan rollbackPlan(const Config& config, const ProcessManager& manager, std::optional<unsigned> to,
                          std::map<std::string, std::string> environment);

} // namespace nixproc
