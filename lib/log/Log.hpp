#pragma once
// The init's own log: stderr only (stdout belongs to the children), one event per line, as text
// or as one JSON object per line.
#include "config/Config.hpp"

#include <string>

namespace nixproc {

// level: trace | debug | info | warn | error (already validated by the configuration).
void setupLogging(const std::string& level, LogFormat format);

} // namespace nixproc
