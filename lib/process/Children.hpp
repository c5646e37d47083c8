#pragma once
// The live children of a process, from /proc: what a subreaper must stop at shutdown (a PID 1
// simply uses kill(-1, sig)).
#include <sys/types.h>
#include <vector>

namespace nixproc {

std::vector<pid_t> childrenOf(pid_t parent);

} // namespace nixproc
