#pragma once
// How the init runs nixproc-<pm>-switch: with the options and environment nix-processmgmt's tools
// take (tools/commonchecks, tools/*/nixproc-*-switch.in, tools/common/nixproc-build.in), so that
// what the configuration says reaches the switch the way upstream reads it.
#include "config/Config.hpp"
#include "manager/ProcessManager.hpp"

#include <map>
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
    // How the user goes back to the previous generation, as a shell line to show; "" when the
    // switch is not upstream's (its own means are unknown). For disnix it is disnix-env's: the
    // upstream nixproc-disnix-switch --rollback never finds a generation (tools/commonchecks:138-147
    // reads $profileDir, which the disnix switch never sets).
    std::string rollback_command;
    // What of the init's environment the switch does not get as it was, and why (said once).
    std::vector<std::string> notes;
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

} // namespace nixproc
