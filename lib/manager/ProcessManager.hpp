#pragma once
// The process manager the image was built for, chainloaded as the init's main child (or, for
// sysvinit and disnix, driven by the init itself). Each backend knows its command, when it is
// ready, how to stop it, and where a deployed profile keeps its process instances.
#include "config/Config.hpp"

#include <chrono>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace nixproc {

// One command the init runs to completion (an rc script, an s6-rc transition...).
struct Step {
    std::vector<std::string> argv;
    std::string label; // for the log: "rc S10webapp start"
};

// How to tell the manager is ready: a unix socket that accepts a connection (supervisord's
// control socket), a FIFO that has a reader (s6-svscan's control FIFO), a TCP port that accepts a
// connection (supervisord's [inet_http_server], upstream's only control channel), or, for a manager
// with none of these, a pidfile written since the probe was made, some time ago.
struct ReadinessProbe {
    enum class Kind { UnixSocket, FifoReader, TcpPort, Pidfile } kind;
    // What answers, as the log shows it: the socket, the FIFO or the pidfile; for TcpPort
    // "IPV4:PORT", a numeric address (names are resolved before the event loop runs).
    std::string path;
    // Pidfile: ready `settle` after the file was last written, and only if that was at or after
    // `written_after` (a file left by a previous run of the container is no sign of life).
    std::chrono::milliseconds settle{};
    std::chrono::system_clock::time_point written_after{};
    // Signals the manager catches once it has set itself up, and its pid (the Init fills it in):
    // supervisord listens on its socket a moment before it installs its handlers
    // (supervisord.py run(): openhttpservers, then setsignals), and a SIGUSR2 passed on in
    // between kills it. Ready only when /proc/PID/status says they are caught; without /proc
    // the check is skipped.
    std::vector<int> catches{};
    pid_t pid = 0;
    bool ready() const; // non-blocking, answers at once

private:
    bool answersNow() const;
};

// Whether /proc/PID/status lists every one of `signals` as caught (SigCgt); also true when it
// cannot be read (no /proc: nothing to tell).
bool catchesSignals(pid_t pid, const std::vector<int>& signals);

// Process instance → identity (what its entry resolves to: a store path changes with content).
// Two inventories of a profile, before and after a switch, make the deployment plan.
using ProfileSnapshot = std::map<std::string, std::string>;

// Where a deployed profile keeps its process instances, one entry each, for the deployment plan.
struct ProfileLayout {
    std::string folder;   // relative to the profile, e.g. "etc/supervisor/conf.d"
    std::string prefix;   // only entries starting with it ("S" for rc scripts); "" for all
    std::string suffix;   // stripped from the name (".conf")
};

// The manager cannot be started: a binary or a file is missing. exit_code is 127 for a missing
// program, 2 for missing configuration.
struct ManagerError : std::runtime_error {
    ManagerError(const std::string& what, int code) : std::runtime_error(what), exit_code(code) {}
    int exit_code;
};

// What the main child is for a manager with a program of its own, when a COMMAND (or
// manager.command) replaced that program's command.
enum class CommandRole {
    Manager, // the manager's program (by file name), or the manager has none of its own
    Shell,   // a shell that does not start the program: interactive, or -c with a script that does not name it
    Other,   // anything else (sleep, a wrapper, a shell running a script file): what it runs is unknown
};

class ProcessManager {
public:
    virtual ~ProcessManager() = default;

    virtual std::string name() const = 0;
    // The main child's argv; empty when the init runs the manager's steps itself.
    virtual std::vector<std::string> command() const = 0;
    virtual std::optional<ReadinessProbe> readiness() const { return std::nullopt; }
    // Run in order once the main child is ready (or at boot, with no main child).
    virtual std::vector<Step> startSteps() const { return {}; }
    // Run in order at shutdown, before the main child gets SIGTERM.
    virtual std::vector<Step> stopSteps() const { return {}; }
    // Why `sig` is not passed on to the main child, as the log says it after "not forwarded to
    // NAME: " ("it has no handler for it and would die"); "" when it is passed on. A manager's
    // program dies of a signal it neither catches nor ignores whose default action is to
    // terminate (or stops, for TSTP, TTIN, TTOU): run as PID 1 it would never have seen one (the
    // kernel drops them for a namespace's init), so nixproc-init must not pass it on either. The
    // user's own command (the plain init, sysvinit's or disnix's COMMAND, a COMMAND that replaces
    // the manager's program) gets everything, as tini passes everything on.
    virtual std::string withheld(int sig) const;
    bool forwards(int sig) const { return withheld(sig).empty(); }
    // The file name of the program command() runs unless told otherwise ("supervisord",
    // "s6-svscan"); "" when the main child is the user's own command (sysvinit, disnix, none).
    virtual std::string program() const { return ""; }
    // What the main child's command is, next to program(): see CommandRole.
    CommandRole commandRole() const;
    virtual std::optional<ProfileLayout> layout() const { return std::nullopt; }
    // The process instances the deployed profile (or manifest) at `profile` holds, one name per
    // process as the user wrote it in the model. By default read in layout(); a manager whose
    // profile is not one entry per process (s6-rc's -srv/-log pairs, Disnix's manifest) reads its own.
    // nullopt: the manager has no notion of process instances (none), and no plan is shown.
    virtual std::optional<ProfileSnapshot> inventory(const std::string& profile) const;
    // Options nixproc-<pm>-switch takes for this manager beyond the common ones (sysvinit's
    // --runlevel), in the switch's own syntax.
    virtual std::vector<std::string> switchOptions() const { return {}; }
    // Extra environment for nixproc-<pm>-switch.
    virtual std::vector<std::string> deployEnvironment() const { return {}; }
    // Whether its switch starts the services itself (rc scripts, disnix-activate) rather than
    // asking a running manager to: then what a successful switch leaves in its process group is
    // services, not leftovers to kill. Its start and stop steps are treated the same way.
    virtual bool switchStartsServices() const { return false; }

    // Throws ManagerError when something it needs is missing; nothing has started then.
    virtual void check() const;
};

std::unique_ptr<ProcessManager> makeProcessManager(const Config& config);
// The plain init's (process_manager none, named "none"): config.manager.command as the main
// child and nothing else; also what runs a shell that replaced a manager's program.
std::unique_ptr<ProcessManager> makePlainInit(const Config& config);

// The line said once at start when the main child's command is not the manager's program
// (`origin`: "COMMAND", or "manager.command" for the configuration's), saying what the init still
// does; "" when it is the manager's program. For a Shell, the caller runs it as a plain init.
std::string replacedCommandNotice(const ProcessManager& manager, const std::string& origin);

// The rule for a program that catches or ignores the signals `kept`: any other signal is withheld
// when its default action would kill or stop it ("it has no handler for it and would die").
std::string withheldUnlessKept(int sig, std::initializer_list<int> kept);

// Throws ManagerError (127 or 126) naming the manager when `program` cannot be run from PATH.
void requireProgram(const std::string& manager, const std::string& program);

// The value of `key` in `[section]` of the text of an ini file (supervisord.conf, read with
// readRegularFile: a FIFO or a device there must not hang the init); "" when absent. Read the way
// supervisord's configparser reads it: `key = value` or `key: value`, keys in any case, the last
// of a repeated key wins, `;` or `#` after a blank starts a comment. No expansion.
std::string iniValueIn(std::string_view ini_text, const std::string& section, const std::string& key);

} // namespace nixproc
