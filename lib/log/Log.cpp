#include "log/Log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace nixproc {

void setupLogging(int verbosity) {
    auto logger = std::make_shared<spdlog::logger>("nixproc-init", std::make_shared<spdlog::sinks::stderr_sink_st>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e nixproc-init %l: %v");
    spdlog::level::level_enum level = spdlog::level::info;
    if (verbosity >= 2) level = spdlog::level::trace;
    else if (verbosity == 1) level = spdlog::level::debug;
    else if (verbosity == -1) level = spdlog::level::warn;
    else if (verbosity <= -2) level = spdlog::level::err;
    logger->set_level(level);
    logger->flush_on(spdlog::level::trace); // docker logs must see each line at once
    spdlog::set_default_logger(logger);
}

} // namespace nixproc
