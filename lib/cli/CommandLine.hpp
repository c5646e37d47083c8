#pragma once
// nixproc-init [OPTIONS] [--] [COMMAND [ARG...]]: options stop at the first word that is not one,
// so the command's own options are never taken for ours.
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nixproc {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct CommandLine {
    std::optional<std::string> config_file;
    std::optional<std::chrono::milliseconds> grace;
    std::optional<std::string> workdir;
    bool subreaper = false;
    bool process_group = false;
    int verbosity = 0; // +1 per -v, -1 per -q
    bool check_config = false;
    bool version = false;
    bool help = false;
    std::vector<std::string> command;
};

// Throws UsageError with a message that names the offending argument.
CommandLine parseCommandLine(const std::vector<std::string>& args);

// "2.5" → 2500 ms; throws UsageError naming `what` for anything but a number from 0 to a day.
std::chrono::milliseconds parseSeconds(const std::string& text, const std::string& what);

const char* usageText();

} // namespace nixproc
