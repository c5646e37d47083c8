#include "manager/UpstreamCommand.hpp"

#include "io/RegularFile.hpp"
#include "io/Text.hpp"
#include "process/CommandPath.hpp"

#include <filesystem>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// The lines of a script, blanks around them removed.
std::vector<std::string_view> linesOf(std::string_view text) {
    std::vector<std::string_view> out;
    forEachLine(text, [&](std::string_view line) { out.push_back(trimBlanks(line)); });
    return out;
}

// The first word of a shell command line, unquoted: bootstrap-init.nix writes the Cmd with
// lib.escapeShellArgs ('...' per word, a quote inside as '\'').
std::string firstWord(std::string_view line) {
    std::string word;
    std::size_t at = 0;
    while (at < line.size() && line[at] != ' ' && line[at] != '\t') {
        char c = line[at++];
        if (c == '\'') {
            auto end = line.find('\'', at);
            if (end == std::string_view::npos) end = line.size();
            word += line.substr(at, end - at);
            at = end + 1;
        } else if (c == '"') {
            while (at < line.size() && line[at] != '"') {
                if (line[at] == '\\' && at + 1 < line.size()) ++at;
                word += line[at++];
            }
            ++at;
        } else if (c == '\\' && at < line.size()) {
            word += line[at++];
        } else {
            word += c;
        }
    }
    return word;
}

// bootstrap-init.nix:14-18: `nix-channel --add URL`, then `nixproc-PM-switch &`. The PM, or "".
std::string bootstrapSwitch(std::string_view text) {
    if (!contains(text, "nix-channel --add")) return "";
    for (auto line : linesOf(text)) {
        constexpr std::string_view prefix = "nixproc-", suffix = "-switch &";
        if (line.starts_with(prefix) && line.ends_with(suffix) && line.size() > prefix.size() + suffix.size())
            return std::string(line.substr(prefix.size(), line.size() - prefix.size() - suffix.size()));
    }
    return "";
}

// bootstrap-init.nix:21-24: what /bin/bootstrap is once it has run: a shebang and `exec CMD`.
// The program it execs, or "".
std::string soleExec(std::string_view text) {
    std::string program;
    int commands = 0;
    for (auto line : linesOf(text)) {
        if (line.empty() || line.front() == '#') continue;
        if (++commands > 1 || !line.starts_with("exec ")) return "";
        program = firstWord(trimBlanks(line.substr(5)));
    }
    return program;
}

// generate-compound-proxy.nix:9-27: _term runs the stop command, a tail keeps it running.
bool compoundProxy(const std::string& name, std::string_view text) {
    if (name.ends_with("-compound-proxy-script")) return true; // writeTextFile's name (:5)
    return contains(text, "_term()") && contains(text, "trap _term TERM") && contains(text, "tail -f /dev/null & pid=$!");
}

// s6-linux-init-maker.c, stage1_script: `#!.../execlineb -S0` then `.../s6-linux-init -c "BASEDIR" ...`.
bool s6LinuxInitStage1(const std::string& name, std::string_view text) {
    if (name == "s6-linux-init") return true;
    auto lines = linesOf(text);
    if (lines.empty() || !lines.front().starts_with("#!") || !contains(lines.front(), "execlineb")) return false;
    for (auto line : lines)
        if (line.starts_with("s6-linux-init -c ") || contains(line, "/s6-linux-init -c ")) return true;
    return false;
}

std::optional<UpstreamCommand> recognise(const std::string& path, std::string_view text, bool follow_exec) {
    const std::string name = fs::path(path).filename().string();
    if (s6LinuxInitStage1(name, text))
        return UpstreamCommand{UpstreamCommand::Kind::S6LinuxInit, "s6-rc",
                               path + ", s6-linux-init's stage 1 (written by s6-linux-init-maker in "
                                      "nixproc/backends/s6-rc/image-steps/s6-rc.nix)",
                               "it must run as PID 1 (as any other process it execs s6-linux-init-telinit, which fails), "
                               "and it would start an s6-svscan of its own and rc.init (s6-rc-init, s6-rc change default), "
                               "which nixproc-init does itself with process_manager: s6-rc"};
    if (compoundProxy(name, text)) {
        if (contains(text, "nixproc-sysvinit-runactivity"))
            return UpstreamCommand{UpstreamCommand::Kind::CompoundProxy, "sysvinit",
                                   path + ", nix-processmgmt's compound proxy script for sysvinit "
                                          "(nixproc/backends/util/generate-compound-proxy.nix, the Cmd of "
                                          "nixproc/backends/sysvinit/image-steps/sysvinit-dynamic.nix)",
                                   "it runs nixproc-sysvinit-runactivity start on the profile's rc scripts, and stop when it "
                                   "gets SIGTERM, which nixproc-init does itself with process_manager: sysvinit: every rc "
                                   "script would be started and stopped twice"};
        if (contains(text, "disnix-activate"))
            return UpstreamCommand{UpstreamCommand::Kind::CompoundProxy, "disnix",
                                   path + ", nix-processmgmt's compound proxy script for disnix "
                                          "(nixproc/backends/util/generate-compound-proxy.nix, the Cmd of "
                                          "nixproc/backends/disnix/image-steps/disnix-dynamic.nix)",
                                   "it runs disnix-activate on the coordinator profile, and again to deactivate it when it "
                                   "gets SIGTERM, which nixproc-init does itself with process_manager: disnix: every "
                                   "service would be activated and deactivated twice"};
        return UpstreamCommand{UpstreamCommand::Kind::CompoundProxy, "",
                               path + ", a compound proxy script of nix-processmgmt "
                                      "(nixproc/backends/util/generate-compound-proxy.nix)",
                               "it runs its own start command, and its stop command when it gets SIGTERM, beside the "
                               "services nixproc-init starts and stops"};
    }
    if (std::string manager = bootstrapSwitch(text); !manager.empty())
        return UpstreamCommand{UpstreamCommand::Kind::Bootstrap, manager,
                               path + ", nix-processmgmt's bootstrap script for " + manager +
                                   " (nixproc/create-image-from-steps/steps/bootstrap-init.nix)",
                               "it adds and updates a Nix channel, starts nixproc-" + manager +
                                   "-switch in the background and execs the image's first Cmd: a second channel "
                                   "set-up and a second switch, running beside nixproc-init's own deployments"};
    if (follow_exec && name == "bootstrap") {
        std::string program = soleExec(text);
        if (program.empty()) return std::nullopt;
        // Upstream writes store paths; a bare name is known by its name alone (no PATH search here).
        FileContent target = program.front() == '/' ? readRegularFile(program, kUpstreamCommandBytes) : FileContent{};
        auto inner = recognise(program, target.text.value_or(""), false);
        if (!inner) return std::nullopt; // `exec supervisord ...`: the manager's own command
        inner->kind = UpstreamCommand::Kind::Bootstrap;
        inner->what = path + ", nix-processmgmt's bootstrap script after its first run "
                             "(nixproc/create-image-from-steps/steps/bootstrap-init.nix overwrites it with "
                             "`exec CMD`), which execs " + inner->what;
        return inner;
    }
    return std::nullopt;
}

} // namespace

std::optional<UpstreamCommand> recogniseUpstreamScript(const std::string& path, std::string_view text) {
    return recognise(path, text, true);
}

std::optional<UpstreamCommand> recogniseUpstreamCommand(const std::vector<std::string>& argv, const char* path_env) {
    if (argv.empty()) return std::nullopt;
    auto resolved = resolveCommand(argv.front(), path_env);
    if (resolved.error) return std::nullopt; // reported as 127 or 126 by the manager's check
    FileContent content = readRegularFile(resolved.path, kUpstreamCommandBytes);
    return recogniseUpstreamScript(resolved.path, content.text.value_or(""));
}

std::string upstreamCommandRefusal(const Config& config, const char* path_env) {
    auto found = recogniseUpstreamCommand(config.manager.command, path_env);
    if (!found) return "";
    const bool works_itself = config.process_manager != ManagerKind::None || !config.deploy.command.empty();
    if (found->kind != UpstreamCommand::Kind::S6LinuxInit && !works_itself) return "";
    std::string fix = "Build the image with `bootstrap = false` and its Cmd set to []";
    if (found->manager == "supervisord")
        fix += " or to supervisord's own command (supervisord --nodaemon --configuration /etc/supervisor/supervisord.conf)";
    fix += ", or give docker run --entrypoint, which clears the image's Cmd; nixproc-init ";
    fix += found->kind == UpstreamCommand::Kind::Bootstrap ? "sets up the channel (bootstrap.channel) and deploys the model itself"
                                                           : "starts and stops the services itself";
    // "the command /bin/bootstrap is nix-processmgmt's…", not "…is /bin/bootstrap, nix-processmgmt's…"
    const std::string& command = config.manager.command.front();
    std::string what = found->what.starts_with(command + ", ") ? found->what.substr(command.size() + 2) : found->what;
    return "the command " + command + " is " + what + ": " + found->why +
           ". Not starting anything. " + fix + " (README: Using it with nix-processmgmt images).";
}

} // namespace nixproc
