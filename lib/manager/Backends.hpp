#pragma once
// The backends, one file each; ProcessManager.cpp picks one from the configuration.
#include "manager/ProcessManager.hpp"

namespace nixproc {

std::unique_ptr<ProcessManager> makeSupervisord(const Config& config);
std::unique_ptr<ProcessManager> makeS6Rc(const Config& config);
std::unique_ptr<ProcessManager> makeSysVinit(const Config& config);
std::unique_ptr<ProcessManager> makeDisnix(const Config& config);
std::unique_ptr<ProcessManager> makeCommandOnly(const Config& config);

// s6-rc with another boot database than the image's /etc/s6/rc/compiled (for the tests).
std::unique_ptr<ProcessManager> makeS6Rc(const Config& config, std::string boot_database);

// What s6-rc left in the runtime folder when the previous run of the container ended (Docker keeps
// /run): the scan folder's absolute links into the live state, the live link (only a link: a real
// folder there is not s6-rc's and is kept, with a warning) and the LIVE:s6-rc-init:XXXXXX,
// LIVE:s6-rc-update:XXXXXX and atomic-symlink temporaries beside it, by the exact names s6-rc and
// skalibs give them. Removed when no s6-svscan reads the scan folder's control FIFO;
// S6Rc::check() calls it before s6-svscan starts.
struct ClearedS6RcRun {
    std::vector<std::string> removed; // paths
    std::vector<std::string> errors;  // "path: why"
};
ClearedS6RcRun clearPreviousS6RcRun(const std::string& scan_dir, const std::string& live_dir);

} // namespace nixproc
