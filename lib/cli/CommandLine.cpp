#include "cli/CommandLine.hpp"

#include <charconv>
#include <cmath>

namespace nixproc {
namespace {

constexpr double kMaxSeconds = 86400;

// Options that take a value, by short and long name.
struct ValueOption {
    char short_name;
    const char* long_name;
};
constexpr ValueOption kValueOptions[] = {{'c', "config"}, {'t', "grace"}, {'w', "workdir"}};

void setValue(CommandLine& cl, char name, const std::string& value, const std::string& spelled) {
    switch (name) {
    case 'c':
        if (value.empty()) throw UsageError("option " + spelled + " needs a file name, not an empty word");
        cl.config_file = value;
        break;
    case 't': cl.grace = parseSeconds(value, "-t/--grace"); break;
    case 'w': cl.workdir = value; break;
    }
}

void setFlag(CommandLine& cl, char name, const std::string& spelled) {
    switch (name) {
    case 's': cl.subreaper = true; break;
    case 'g': cl.process_group = true; break;
    case 'v': ++cl.verbosity; break;
    case 'q': --cl.verbosity; break;
    case 'h': cl.help = true; break;
    default: throw UsageError("unknown option " + spelled);
    }
}

std::optional<char> valueOptionByLong(const std::string& name) {
    for (const auto& o : kValueOptions)
        if (name == o.long_name) return o.short_name;
    return std::nullopt;
}

bool takesValue(char c) {
    for (const auto& o : kValueOptions)
        if (o.short_name == c) return true;
    return false;
}

} // namespace

std::chrono::milliseconds parseSeconds(const std::string& text, const std::string& what) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0 ||
        v > kMaxSeconds)
        throw UsageError(what + " wants a number of seconds from 0 to 86400, not '" + text + "'");
    return std::chrono::milliseconds(static_cast<long long>(std::llround(v * 1000)));
}

CommandLine parseCommandLine(const std::vector<std::string>& args) {
    CommandLine cl;
    std::size_t i = 0;
    auto needValue = [&](const std::string& spelled) -> const std::string& {
        if (i + 1 >= args.size()) throw UsageError("option " + spelled + " needs a value");
        return args[++i];
    };
    for (; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a.size() < 2 || a[0] != '-') break; // the command starts here
        if (a.starts_with("--")) {
            std::string name = a.substr(2), value;
            auto eq = name.find('=');
            bool inline_value = eq != std::string::npos;
            if (inline_value) value = name.substr(eq + 1), name.resize(eq);
            if (auto c = valueOptionByLong(name)) {
                setValue(cl, *c, inline_value ? value : needValue("--" + name), "--" + name);
                continue;
            }
            if (inline_value) throw UsageError("option --" + name + " takes no value");
            if (name == "subreaper") cl.subreaper = true;
            else if (name == "process-group") cl.process_group = true;
            else if (name == "verbose") ++cl.verbosity;
            else if (name == "quiet") --cl.verbosity;
            else if (name == "check-config") cl.check_config = true;
            else if (name == "version") cl.version = true;
            else if (name == "help") cl.help = true;
            else throw UsageError("unknown option --" + name);
            continue;
        }
        for (std::size_t k = 1; k < a.size(); ++k) { // -sgv, -t5, -t 5
            char c = a[k];
            if (takesValue(c)) {
                std::string spelled = std::string("-") + c;
                setValue(cl, c, k + 1 < a.size() ? a.substr(k + 1) : needValue(spelled), spelled);
                break;
            }
            setFlag(cl, c, std::string("-") + c);
        }
    }
    cl.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
    if (!cl.command.empty() && cl.command.front().empty()) throw UsageError("the command's name is an empty word");
    return cl;
}

const char* usageText() {
    return R"(Usage: nixproc-init [OPTIONS] [--] [COMMAND [ARG...]]

PID 1 for multi-process containers deployed with the Nix process management framework.
With a COMMAND and no configuration file it is a plain init: COMMAND is its main child.

  -c, --config FILE     configuration file (default /etc/nixproc/init.yaml)
  -s, --subreaper       register as child subreaper even when PID 1 (always done otherwise)
  -g, --process-group   forward signals to the main child's whole process group
  -t, --grace SECONDS   from the stop request to SIGKILL (default 8)
  -w, --workdir DIR     start the main child in DIR (default: the current folder)
  -v, --verbose         more log lines (twice: trace); -q, --quiet: fewer
      --check-config    validate the configuration, print it, and exit
      --version         print the version and exit
  -h, --help            print this help and exit

Exit status: the main child's, 128+N if it died of signal N, 127 command not found,
126 command not executable, 2 usage or configuration error.
)";
}

} // namespace nixproc
