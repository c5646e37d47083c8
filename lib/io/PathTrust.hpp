#pragma once
// Whether a path can be trusted by a process running as root: the model is code that the switch
// runs as root, and the state folder holds the private copy of it that is deployed. Whoever can
// write a file, or any folder above it, or rename one of those folders, can replace it.
#include <string>

namespace nixproc {

// Why `path` cannot be trusted ("" when it can): it, or a folder above it up to "/", looked at
// without following symlinks, is owned by another user than root and the init's own, or is
// writable by its group or by others. A world-writable folder with the sticky bit (/tmp) is
// accepted above an entry owned by root or the init's user, since then only they can rename that
// entry. A symlink on the way is accepted as such; pass its target (realpath) to check that too.
std::string untrustedPath(const std::string& path);

// Why a file or folder with this owner and mode cannot be trusted ("" when it can). `what` names
// it in the reason: "the model file /etc/nixproc/processes.nix".
std::string untrustedOwnerOrMode(const std::string& what, unsigned owner, unsigned mode);

} // namespace nixproc
