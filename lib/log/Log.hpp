#pragma once
// The init's own log: stderr only (stdout belongs to the children), one event per line.
namespace nixproc {

// verbosity: 0 = info, 1 = debug, 2+ = trace, -1 = warnings, -2 = errors only.
void setupLogging(int verbosity);

} // namespace nixproc
