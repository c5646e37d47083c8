#pragma once
// What nixproc-init reads the way supervisor 4.2.5 (Debian 12's, and the one nixpkgs packaged
// when nix-processmgmt 0e9ec77 was current) reads it: the [inet_http_server] port, and where a
// bare `supervisorctl` (no -c, as nix-processmgmt's nixproc-supervisord-deploy runs it) looks for
// its configuration. Pure functions; the supervisord backend (Supervisord.cpp) uses them.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nixproc {

// `port` of [inet_http_server], as supervisor/datatypes.py inet_address() reads it: "HOST:PORT"
// (split at the last ':'), ":PORT" or "*:PORT" for every interface, or a bare "PORT" (every
// interface too); the host is lowercased; the port is Python's int() of the text, 1 to 65535.
struct InetPort {
    std::string host; // "" for every interface
    std::uint16_t port = 0;
};

// Throws std::invalid_argument saying why supervisord would refuse `value`.
InetPort parseInetPort(std::string_view value);

// The files a bare supervisorctl tries, in order, the first that exists wins (supervisor/options.py
// Options.__init__, lines 108-115, and default_configfile): PREFIX/etc/supervisord.conf and
// PREFIX/supervisord.conf, PREFIX being dirname(dirname(argv[0])) of the supervisorctl that runs;
// then supervisord.conf and etc/supervisord.conf in the working folder `cwd`; then
// /etc/supervisord.conf and /etc/supervisor/supervisord.conf. `argv0` is the path the program is
// run by (a PATH entry, not resolved through symlinks: the interpreter gets it as it was run).
std::vector<std::string> supervisorctlSearchPaths(const std::string& argv0, const std::string& cwd);

// What a bare supervisorctl searching `search` would read instead of `config`, as a sentence for
// the log; nullopt when the first existing file is `config` itself (the same file, by any path).
std::optional<std::string> bareSupervisorctlWarning(const std::string& config, const std::vector<std::string>& search);

} // namespace nixproc
