#pragma once
// How a child's wait status becomes the init's exit code, the way shells report it.
#include <string>

namespace nixproc {

// The conventional exit codes of an init (and of a shell): the child's code, 128+N when it died
// of signal N, 127 when the command does not exist, 126 when it cannot be executed, 2 for a
// usage or configuration error.
namespace exit_code {
inline constexpr int kUsage = 2;
inline constexpr int kInternal = 1;
inline constexpr int kCannotExecute = 126;
inline constexpr int kNotFound = 127;
inline constexpr int kSignalBase = 128;
} // namespace exit_code

// `status` as returned by waitpid().
int exitCodeOf(int status);

// "exited with status 3", "killed by SIGTERM (core dumped)".
std::string describeStatus(int status);

} // namespace nixproc
