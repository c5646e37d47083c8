#pragma once
// One validated configuration from, in rising precedence: the YAML file, the environment
// (NIXPROC_INIT_<SECTION>_<KEY>, and NIXPROC_PROCESSES as for the nixproc tools), the command line.
#include "cli/CommandLine.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nixproc {

enum class ManagerKind { Supervisord, S6Rc, SysVinit, Disnix, None };
enum class OnBoot { First, Changed, Always, Never };
enum class LogFormat { Text, Json };
enum class OnFailure { Keep, Rollback };

struct Config {
    ManagerKind process_manager = ManagerKind::None;
    std::string processes = "/etc/nixproc/processes.nix";
    // The deployed profile, a path. Default: /nix/var/nix/profiles/processes, or for disnix the
    // coordinator profile /nix/var/nix/profiles/per-user/USER/disnix-coordinator/default (which is
    // the manifest itself). The switch gets it the upstream way: `-p NAME` and NIX_USER_PROFILE_DIR.
    std::string profile;
    struct {
        bool enabled = true;
        std::vector<std::string> extra{"ids.nix", "idresources.nix"};
        std::chrono::milliseconds debounce{250};
    } watch;
    struct {
        std::vector<std::string> command; // empty: nixproc-<pm>-switch
        std::vector<std::string> check{"nix-instantiate", "--parse"};
        std::chrono::seconds timeout{3600};
        OnBoot on_boot = OnBoot::Changed;
        bool allow_insecure_model = false;
        // A deployment that timed out or was interrupted (its job killed from outside) is tried
        // again up to `retries` times, after retry_backoff, doubled each time (at most an hour).
        unsigned retries = 3;
        std::chrono::seconds retry_backoff{10};
        // A switch that failed (or timed out) may have left services half updated: `rollback`
        // switches back to the generation that ran before, as `nixproc-initctl rollback` does.
        OnFailure on_failure = OnFailure::Keep;
    } deploy;
    // Housekeeping of the profile and the Nix store, off unless set; never while a deployment runs.
    struct {
        unsigned keep_generations = 0;          // delete all but the last N generations of the profile; 0 keeps all
        unsigned collect_after_deployments = 0; // nix-collect-garbage after every K successful deployments; 0: never
        std::chrono::seconds collect_every{0};  // and/or every so often; 0: never
        std::chrono::seconds timeout{3600};     // each gc command, at most
        bool enabled() const { return keep_generations || collect_after_deployments || collect_every.count(); }
    } gc;
    struct {
        // The control socket nixproc-initctl talks to; "" for none.
        std::string socket = "/run/nixproc-init/control.sock";
    } control;
    struct {
        // Added and updated before the first deployment, as upstream's bootstrap does; "" skips it.
        // Skipped too when root's channels profile already exists.
        std::string channel = "https://nixos.org/channels/nixpkgs-unstable";
        // Each of nix-channel --add and --update, at most: a channel server that accepts and
        // never answers must not hold the first deployment for deploy.timeout_s.
        std::chrono::seconds timeout{600};
    } bootstrap;
    // What nix-processmgmt's tools are told (their --state-dir, --runtime-dir and
    // --force-disable-user-change), also read from NIXPROC_STATE_DIR, NIXPROC_RUNTIME_DIR and
    // NIXPROC_FORCE_DISABLE_USER_CHANGE=1 as the tools read them. s6-rc's folders follow from them
    // as nixproc-s6-rc-switch derives them: STATE/etc/s6/rc, RUNTIME/service, RUNTIME/s6-rc.
    struct {
        std::string state_dir = "/var";
        std::string runtime_dir; // "": upstream's default, /var/run for /var, else STATE/run
        bool force_disable_user_change = false;
    } nixproc;
    struct {
        std::vector<std::string> command; // empty: the backend's own
        std::string config = "/etc/supervisor/supervisord.conf"; // supervisord
        int runlevel = 3;                                         // sysvinit
        std::chrono::seconds step_timeout{60}; // each rc script, s6-rc or disnix step
        std::string workdir;                   // empty: the init's own
    } manager;
    struct {
        std::chrono::milliseconds grace{8000};
    } shutdown;
    std::string state_dir = "/var/lib/nixproc-init";
    struct {
        LogFormat format = LogFormat::Text;
        std::string level = "info";
    } log;
    // Not configuration keys: how the init was asked to run.
    bool signal_process_group = false;
    bool force_subreaper = false;
    std::string source; // the file that was read, or "" for none

    // The switch command, with the default filled in.
    std::vector<std::string> deployCommand() const;
    // nixproc.runtime_dir, with upstream's default filled in.
    std::string runtimeDir() const;
};

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline constexpr const char* kDefaultConfigFile = "/etc/nixproc/init.yaml";

// The file is the command line's -c, or kDefaultConfigFile unless nothing is there. It is read
// without blocking and must be a regular file of UTF-8 YAML text (a FIFO, a device or a folder is
// an error at once). Throws ConfigError, and nothing else, whose message names file:line:column
// and the key when known, or the file, or the variable (tests/fuzz/ConfigFuzz.cpp holds it to it).
Config loadConfig(const CommandLine& cli, const std::map<std::string, std::string>& environment);

// The effective configuration, as YAML that loadConfig accepts back.
std::string renderConfig(const Config& config);

std::string managerName(ManagerKind kind);

std::map<std::string, std::string> environmentMap(char** environ);
// The other way round: "KEY=VALUE" entries, as a child's environment is given.
std::vector<std::string> environmentList(const std::map<std::string, std::string>& environment);

} // namespace nixproc
