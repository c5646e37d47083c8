#pragma once
// The Cmd of a nix-processmgmt image, when nixproc-init is made its Entrypoint: Docker then runs
// `nixproc-init CMD...`, and CMD becomes the main command. The images made by
// createMutableMultiProcessImage (nix-processmgmt 0e9ec77) have a Cmd that does the init's own
// work: /bin/bootstrap adds a channel and runs a switch of its own, the sysvinit and disnix
// compound proxies start and stop every process, s6-linux-init's /bin/init must be PID 1. Those
// are recognised here, from the command's file name and its first few KiB, before anything runs.
#include "config/Config.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nixproc {

struct UpstreamCommand {
    enum class Kind { Bootstrap, CompoundProxy, S6LinuxInit } kind;
    std::string manager; // the process manager it was made for ("sysvinit"), "" when not known
    std::string what;    // names it and the upstream file that makes it
    std::string why;     // what it does that nixproc-init does too, or why it cannot run under it
};

// The most of a command's file that is read to recognise it; upstream's scripts are far smaller.
inline constexpr std::size_t kUpstreamCommandBytes = 8 * 1024;

// What the file at `path` is, from its file name and `text` (its content, or "" when it could not
// be read): nullopt for anything but the commands above (supervisord's upstream Cmd among them).
// A /bin/bootstrap that has run once is `exec CMD` (bootstrap-init.nix overwrites itself): it is
// what CMD is, which is looked at too (read only when it is there and small).
std::optional<UpstreamCommand> recogniseUpstreamScript(const std::string& path, std::string_view text);

// argv[0] found on `path_env` as execvp would, read with readRegularFile (a regular file of at
// most kUpstreamCommandBytes, never blocking), and recognised; nullopt when it cannot be found.
std::optional<UpstreamCommand> recogniseUpstreamCommand(const std::vector<std::string>& argv, const char* path_env);

// Why the configuration's main command (manager.command: the COMMAND after the options, the
// image's Cmd) must not run under this configuration, with what to do instead; "" when it may.
// s6-linux-init's stage 1 is always refused; the bootstrap and the compound proxies only when the
// init deploys or runs a process manager itself (with neither, it is a plain init, as tini).
std::string upstreamCommandRefusal(const Config& config, const char* path_env);

} // namespace nixproc
