#include "config/Config.hpp"

#include "io/RegularFile.hpp"
#include "log/Log.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace nixproc {
namespace {

constexpr std::array kSections{"watch", "deploy", "bootstrap", "nixproc", "manager", "shutdown", "log", "gc", "control"};
constexpr const char* kEnvPrefix = "NIXPROC_INIT_";

// What the user wrote, shortened for a message that must fit on a line: a key or a value can be
// anything up to the size of the file. Cut at a character boundary.
std::string shown(const std::string& text) {
    constexpr std::size_t kMax = 80;
    if (text.size() <= kMax) return text;
    std::size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
    return text.substr(0, cut) + "...";
}

// Where a value came from, for the error message: "init.yaml:4:12: deploy.timeout_s".
struct Origin {
    std::string place; // "FILE:LINE:COL" or "environment variable NAME"
    std::string key;   // "deploy.timeout_s"; "" where no key is known yet
    [[noreturn]] void fail(const std::string& what) const {
        throw ConfigError(place + ": " + (key.empty() ? "" : shown(key) + ": ") + what);
    }
};

// "a list", "a mapping", "empty": what a node is, when it is not what was expected.
std::string kindOf(const YAML::Node& node) {
    return node.IsSequence() ? "a list" : node.IsMap() ? "a mapping" : node.IsScalar() ? "a single value" : "empty";
}

std::string scalar(const YAML::Node& node, const Origin& at) {
    if (node.IsNull()) at.fail("expected a single value, got nothing");
    if (!node.IsScalar()) at.fail("expected a single value, not " + kindOf(node));
    return node.Scalar();
}

std::string text(const YAML::Node& node, const Origin& at) {
    if (node.IsNull()) return "";
    return scalar(node, at);
}

std::string path(const YAML::Node& node, const Origin& at) {
    std::string p = scalar(node, at);
    if (p.empty() || p.front() != '/') at.fail("expected an absolute path, got '" + shown(p) + "'");
    return p;
}

bool boolean(const YAML::Node& node, const Origin& at) {
    bool b = false;
    if (!YAML::convert<bool>::decode(node, b)) at.fail("expected true or false, got '" + shown(scalar(node, at)) + "'");
    return b;
}

double number(const YAML::Node& node, const Origin& at, double min, double max, const char* unit) {
    std::string s = scalar(node, at);
    double v = 0;
    try {
        std::size_t used = 0;
        v = std::stod(s, &used);
        if (used != s.size()) throw std::invalid_argument(s);
    } catch (const std::exception&) {
        at.fail("expected a number of " + std::string(unit) + ", got '" + shown(s) + "'");
    }
    if (!std::isfinite(v) || v < min || v > max) {
        auto fmt = [](double d) { return d == std::floor(d) ? std::to_string(static_cast<long long>(d)) : std::to_string(d); };
        at.fail("must be from " + fmt(min) + " to " + fmt(max) + " " + unit + ", got " + shown(s));
    }
    return v;
}

long long whole(const YAML::Node& node, const Origin& at, long long min, long long max, const char* unit) {
    double v = number(node, at, static_cast<double>(min), static_cast<double>(max), unit);
    if (v != std::floor(v)) at.fail("expected a whole number of " + std::string(unit) + ", got " + shown(scalar(node, at)));
    return static_cast<long long>(v);
}

std::vector<std::string> argv(const YAML::Node& node, const Origin& at, bool allow_empty) {
    if (!node.IsSequence()) at.fail("expected a list such as [program, argument], one word per item");
    std::vector<std::string> out;
    for (const auto& item : node) {
        if (!item.IsScalar()) at.fail("every item of the list must be a single word");
        out.push_back(item.Scalar());
    }
    if (out.empty() && !allow_empty) at.fail("must not be empty");
    if (!out.empty() && out.front().empty()) at.fail("the program name must not be empty");
    return out;
}

template <class E, std::size_t N>
E choice(const YAML::Node& node, const Origin& at, const std::array<std::pair<const char*, E>, N>& choices) {
    std::string v = scalar(node, at), all;
    for (const auto& [name, value] : choices) {
        if (v == name) return value;
        all += (all.empty() ? "" : " | ") + std::string(name);
    }
    at.fail("must be one of " + all + ", got '" + shown(v) + "'");
}

constexpr std::array kManagers{std::pair{"supervisord", ManagerKind::Supervisord}, std::pair{"s6-rc", ManagerKind::S6Rc},
                               std::pair{"sysvinit", ManagerKind::SysVinit}, std::pair{"disnix", ManagerKind::Disnix},
                               std::pair{"none", ManagerKind::None}};
constexpr std::array kOnBoot{std::pair{"first", OnBoot::First}, std::pair{"changed", OnBoot::Changed},
                             std::pair{"always", OnBoot::Always}, std::pair{"never", OnBoot::Never}};
constexpr std::array kOnFailure{std::pair{"keep", OnFailure::Keep}, std::pair{"rollback", OnFailure::Rollback}};
constexpr std::array kFormats{std::pair{"text", LogFormat::Text}, std::pair{"json", LogFormat::Json}};
constexpr std::array kLevels{std::pair{"trace", 0}, std::pair{"debug", 1}, std::pair{"info", 2},
                             std::pair{"warn", 3}, std::pair{"error", 4}};

template <class E, std::size_t N>
std::string nameOf(E value, const std::array<std::pair<const char*, E>, N>& choices) {
    for (const auto& [name, v] : choices)
        if (v == value) return name;
    return "?";
}

using Setter = std::function<void(Config&, const YAML::Node&, const Origin&)>;

// Every key there is. The table is the schema: the file, the environment and --check-config use it.
const std::vector<std::pair<std::string, Setter>>& keys() {
    using N = const YAML::Node&;
    using O = const Origin&;
    static const std::vector<std::pair<std::string, Setter>> table{
        {"process_manager", [](Config& c, N n, O o) { c.process_manager = choice(n, o, kManagers); }},
        {"processes", [](Config& c, N n, O o) { c.processes = path(n, o); }},
        {"profile", [](Config& c, N n, O o) { c.profile = path(n, o); }},
        {"state_dir", [](Config& c, N n, O o) { c.state_dir = path(n, o); }},
        {"watch.enabled", [](Config& c, N n, O o) { c.watch.enabled = boolean(n, o); }},
        {"watch.extra", [](Config& c, N n, O o) {
             c.watch.extra = argv(n, o, true);
             for (const auto& f : c.watch.extra)
                 if (f.empty() || f.find('/') != std::string::npos) o.fail("'" + shown(f) + "' must be a file name in the model's folder");
         }},
        {"watch.debounce_ms", [](Config& c, N n, O o) { c.watch.debounce = std::chrono::milliseconds(whole(n, o, 0, 60000, "milliseconds")); }},
        {"deploy.command", [](Config& c, N n, O o) { c.deploy.command = argv(n, o, false); }},
        {"deploy.check", [](Config& c, N n, O o) { c.deploy.check = argv(n, o, true); }},
        {"deploy.timeout_s", [](Config& c, N n, O o) { c.deploy.timeout = std::chrono::seconds(whole(n, o, 1, 7 * 86400, "seconds")); }},
        {"deploy.on_boot", [](Config& c, N n, O o) { c.deploy.on_boot = choice(n, o, kOnBoot); }},
        {"deploy.allow_insecure_model", [](Config& c, N n, O o) { c.deploy.allow_insecure_model = boolean(n, o); }},
        {"deploy.retries", [](Config& c, N n, O o) { c.deploy.retries = static_cast<unsigned>(whole(n, o, 0, 100, "tries")); }},
        {"deploy.retry_backoff_s", [](Config& c, N n, O o) { c.deploy.retry_backoff = std::chrono::seconds(whole(n, o, 1, 3600, "seconds")); }},
        {"deploy.on_failure", [](Config& c, N n, O o) { c.deploy.on_failure = choice(n, o, kOnFailure); }},
        {"gc.keep_generations", [](Config& c, N n, O o) { c.gc.keep_generations = static_cast<unsigned>(whole(n, o, 0, 100000, "generations")); }},
        {"gc.collect_after_deployments", [](Config& c, N n, O o) {
             c.gc.collect_after_deployments = static_cast<unsigned>(whole(n, o, 0, 100000, "deployments"));
         }},
        {"gc.collect_every_h", [](Config& c, N n, O o) {
             c.gc.collect_every = std::chrono::seconds(std::llround(number(n, o, 0, 24 * 366, "hours") * 3600));
         }},
        {"gc.timeout_s", [](Config& c, N n, O o) { c.gc.timeout = std::chrono::seconds(whole(n, o, 1, 7 * 86400, "seconds")); }},
        {"control.socket", [](Config& c, N n, O o) { c.control.socket = text(n, o).empty() ? "" : path(n, o); }},
        {"bootstrap.channel", [](Config& c, N n, O o) { c.bootstrap.channel = text(n, o); }},
        {"bootstrap.timeout_s", [](Config& c, N n, O o) { c.bootstrap.timeout = std::chrono::seconds(whole(n, o, 1, 86400, "seconds")); }},
        {"nixproc.state_dir", [](Config& c, N n, O o) { c.nixproc.state_dir = path(n, o); }},
        {"nixproc.runtime_dir", [](Config& c, N n, O o) { c.nixproc.runtime_dir = path(n, o); }},
        {"nixproc.force_disable_user_change", [](Config& c, N n, O o) { c.nixproc.force_disable_user_change = boolean(n, o); }},
        {"manager.command", [](Config& c, N n, O o) { c.manager.command = argv(n, o, true); }},
        {"manager.config", [](Config& c, N n, O o) { c.manager.config = path(n, o); }},
        {"manager.runlevel", [](Config& c, N n, O o) { c.manager.runlevel = static_cast<int>(whole(n, o, 0, 6, "(runlevel)")); }},
        {"manager.step_timeout_s", [](Config& c, N n, O o) { c.manager.step_timeout = std::chrono::seconds(whole(n, o, 1, 86400, "seconds")); }},
        {"manager.workdir", [](Config& c, N n, O o) { c.manager.workdir = text(n, o); }},
        {"shutdown.grace_s", [](Config& c, N n, O o) {
             c.shutdown.grace = std::chrono::milliseconds(std::llround(number(n, o, 0, 86400, "seconds") * 1000));
         }},
        {"log.format", [](Config& c, N n, O o) { c.log.format = choice(n, o, kFormats); }},
        {"log.level", [](Config& c, N n, O o) { c.log.level = nameOf(choice(n, o, kLevels), kLevels); }},
    };
    return table;
}

// Keys of earlier versions that no longer exist, with what replaced them.
constexpr const char* kRemovedKeys[]{"manager.scan_dir", "manager.live_dir"};
std::optional<std::string> removedKeyHint(const std::string& key) {
    if (key == "manager.scan_dir" || key == "manager.live_dir")
        return "no longer a key: s6-rc's scan and live folders are RUNTIME/service and RUNTIME/s6-rc, where "
               "nixproc-s6-rc-switch puts them; set nixproc.runtime_dir";
    return std::nullopt;
}

const Setter* setterFor(const std::string& key) {
    for (const auto& [name, set] : keys())
        if (name == key) return &set;
    return nullptr;
}

std::string where(const std::string& file, const YAML::Mark& mark) {
    if (mark.is_null()) return file;
    return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

// The first place where `text` is not YAML text as the init accepts it: UTF-8 (YAML also allows
// UTF-16 and UTF-32, which nobody writes an init.yaml in, and yaml-cpp quietly turns bytes that are
// not UTF-8 into U+FFFD) without the control characters YAML forbids (all C0 but tab, LF and CR;
// DEL; C1 but NEL). The line and column count bytes, as yaml-cpp's marks do.
struct TextFault {
    int line = 0, column = 0; // from 0, as in YAML::Mark
    bool control = false;     // a control character; else a byte that is not UTF-8
    std::string code;         // "0xff", "U+009B"
    std::string what(const std::string& where_in_text = "") const {
        return control ? "a control character (" + code + where_in_text + ") is not allowed in YAML"
                       : "not UTF-8 text (byte " + code + where_in_text + ")";
    }
};

std::optional<TextFault> textFault(std::string_view text) {
    int line = 0;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < text.size();) {
        Utf8Char c = decodeUtf8(text, i);
        char code[16];
        auto fault = [&](bool control) { return TextFault{line, static_cast<int>(i - line_start), control, code}; };
        if (c.length == 0) {
            std::snprintf(code, sizeof code, "0x%02x", static_cast<unsigned char>(text[i]));
            return fault(false);
        }
        bool allowed = c.code == '\t' || c.code == '\n' || c.code == '\r' || c.code == 0x85 ||
                       (c.code >= 0x20 && c.code != 0x7f && !(c.code >= 0x80 && c.code <= 0x9f));
        if (!allowed) {
            std::snprintf(code, sizeof code, c.code < 0x80 ? "0x%02x" : "U+%04X", static_cast<unsigned>(c.code));
            return fault(true);
        }
        i += c.length;
        if (c.code == '\n') ++line, line_start = i;
    }
    return std::nullopt;
}

// Where each document of a YAML stream starts, and nothing else.
struct DocumentStarts final : YAML::EventHandler {
    std::vector<YAML::Mark> marks;
    void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// The start of the second document of `text`, which yaml-cpp's Load would drop without a word.
// At most two documents are asked for: on some text the parser gives empty documents for ever.
std::optional<YAML::Mark> secondDocument(std::string_view text) {
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    DocumentStarts starts;
    while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {}
    if (starts.marks.size() < 2) return std::nullopt;
    return starts.marks[1];
}

// yaml-cpp's parse of `text`; any fault is a ConfigError at its line and column in `file`, or, for
// the value of an environment variable, at `at`. One document only: Load reads the first of a
// stream and drops the rest, which would be settings silently ignored.
YAML::Node parseYaml(std::string_view text, const std::string& file, const Origin* at) {
    auto fail = [&](const YAML::Mark& mark, const std::string& what) -> void {
        if (at) at->fail("not a valid value: " + what);
        throw ConfigError(where(file, mark) + ": " + what);
    };
    if (auto fault = textFault(text)) {
        if (at) at->fail(fault->what(" at column " + std::to_string(fault->column + 1)));
        YAML::Mark mark;
        mark.line = fault->line;
        mark.column = fault->column;
        throw ConfigError(where(file, mark) + ": " + fault->what());
    }
    try {
        YAML::Node root = YAML::Load(std::string(text));
        // Not LoadAll: yaml-cpp 0.7's loops for ever on some text ("  ,>>>", found by the fuzzer).
        if (auto second = secondDocument(text)) {
            if (at) at->fail("not a valid value: a second YAML document starts at line " + std::to_string(second->line + 1));
            throw ConfigError(where(file, *second) +
                              ": a second YAML document starts here: nixproc-init reads one (remove the `---` line, or merge the documents)");
        }
        return root;
    } catch (const YAML::DeepRecursion& e) {
        fail(e.mark, at ? "nested too deeply" : "not valid YAML: nested too deeply");
    } catch (const YAML::Exception& e) {
        fail(e.mark, at ? e.msg : "not valid YAML: " + e.msg);
    }
    return {};
}

// "FILE: is a FIFO, not a regular file", "FILE: cannot be read: Permission denied".
[[noreturn]] void unreadable(const std::string& file, const FileContent& content) {
    if (content.errno_value != EINVAL && content.errno_value != EFBIG)
        throw ConfigError(file + ": cannot be read: " + content.error);
    std::string why = file + ": " + content.error;
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        why += " (a bind mount of a file that is missing on the host makes an empty folder in its place: mount "
               "an existing file)";
    throw ConfigError(why);
}

// A value's place: a null value (the key with nothing after it) is where its key is, not on the
// next line where yaml-cpp marks it.
std::string placeOf(const std::string& file, const YAML::Node& key, const YAML::Node& value) {
    return where(file, value.IsNull() ? key.Mark() : value.Mark());
}

void applyText(Config& config, const std::string& file, std::string_view text) {
    constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF"; // Notepad's; columns count after it
    if (text.starts_with(kByteOrderMark)) text.remove_prefix(kByteOrderMark.size());
    YAML::Node root = parseYaml(text, file, nullptr);
    if (root.IsNull()) return;
    if (!root.IsMap()) throw ConfigError(where(file, root.Mark()) + ": expected a mapping of keys");
    std::map<std::string, int> seen; // key → line: a second mention would silently win
    std::function<void(const YAML::Node&, const std::string&)> walk = [&](const YAML::Node& map, const std::string& prefix) {
        for (const auto& kv : map) {
            if (!kv.first.IsScalar()) // [a]: 1, {a: 1}: 1, ~: 1 (yaml-cpp cannot even convert these)
                Origin{where(file, kv.first.Mark()), prefix.empty() ? "" : prefix.substr(0, prefix.size() - 1)}.fail(
                    "a key must be a name, not " + kindOf(kv.first));
            std::string key = prefix + kv.first.Scalar();
            Origin at{where(file, kv.first.Mark()), key};
            if (auto [it, fresh] = seen.emplace(key, kv.first.Mark().line + 1); !fresh)
                at.fail("given twice (first on line " + std::to_string(it->second) + ")");
            bool section = prefix.empty() && std::find(kSections.begin(), kSections.end(), key) != kSections.end();
            if (section) {
                if (kv.second.IsNull()) continue;
                if (!kv.second.IsMap()) at.fail("expected a mapping of keys");
                walk(kv.second, key + ".");
                continue;
            }
            const Setter* set = setterFor(key);
            if (!set) at.fail(removedKeyHint(key).value_or("unknown key"));
            (*set)(config, kv.second, Origin{placeOf(file, kv.first, kv.second), key});
        }
    };
    walk(root, "");
}

// Read without blocking, whatever is there: a FIFO, a device or a folder (what Docker makes of a
// bind mount whose source file is missing) is an error, at once.
void applyFile(Config& config, const std::string& file, const FileContent& content) {
    if (!content.text) unreadable(file, content);
    try {
        applyText(config, file, *content.text);
    } catch (const YAML::Exception& e) { // a yaml-cpp path not foreseen above: still an error at its place
        throw ConfigError(where(file, e.mark) + ": " + e.msg);
    }
}

std::string envName(const std::string& key) {
    std::string name = kEnvPrefix;
    for (char c : key) name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return name;
}

void applyEnvironment(Config& config, const std::map<std::string, std::string>& env) {
    auto apply = [&](const std::string& var, const std::string& value, const std::string& key) {
        Origin at{"environment variable " + var, key};
        try {
            YAML::Node node = parseYaml(value, var, &at);
            if (node.IsNull()) node = YAML::Node(value);
            (*setterFor(key))(config, node, at);
        } catch (const YAML::Exception& e) { // a yaml-cpp path not foreseen: still an error naming the variable
            at.fail(e.msg);
        }
    };
    // The variables nix-processmgmt's own tools read (upstream images set them in Env) override the
    // file as they would for the tools; NIXPROC_INIT_*, meant for this init, override them in turn.
    if (auto it = env.find("NIXPROC_PROCESSES"); it != env.end() && !it->second.empty())
        apply(it->first, it->second, "processes");
    if (auto it = env.find("NIXPROC_STATE_DIR"); it != env.end() && !it->second.empty())
        apply(it->first, it->second, "nixproc.state_dir");
    if (auto it = env.find("NIXPROC_RUNTIME_DIR"); it != env.end() && !it->second.empty())
        apply(it->first, it->second, "nixproc.runtime_dir");
    if (auto it = env.find("NIXPROC_FORCE_DISABLE_USER_CHANGE"); it != env.end() && it->second == "1")
        config.nixproc.force_disable_user_change = true;
    for (const auto& [var, value] : env) {
        if (!var.starts_with(kEnvPrefix)) continue;
        auto key = std::find_if(keys().begin(), keys().end(), [&](const auto& k) { return envName(k.first) == var; });
        if (key == keys().end()) {
            auto removed = std::find_if(std::begin(kRemovedKeys), std::end(kRemovedKeys), [&](const char* k) { return envName(k) == var; });
            throw ConfigError("environment variable " + var + ": " +
                              (removed != std::end(kRemovedKeys) ? *removedKeyHint(*removed) : "no such configuration key"));
        }
        apply(var, value, key->first);
    }
}

void applyCommandLine(Config& config, const CommandLine& cli) {
    if (cli.grace) config.shutdown.grace = *cli.grace;
    if (cli.workdir) config.manager.workdir = *cli.workdir;
    if (!cli.command.empty()) config.manager.command = cli.command;
    config.signal_process_group = cli.process_group;
    config.force_subreaper = cli.subreaper;
    if (cli.verbosity != 0) {
        int level = 2 - cli.verbosity; // info moved by -v (down) and -q (up)
        level = std::clamp(level, 0, 4);
        config.log.level = kLevels[static_cast<std::size_t>(level)].first;
    }
}

// A string as --check-config prints it. yaml-cpp's emitter writes DEL, CR and bytes that are not
// UTF-8 as they are, in plain scalars too, which YAML readers (this one included) do not take back
// as they were: a string with any control character is written double-quoted with escapes, and a
// byte that is not UTF-8 as \ufffd (a word of the command line can hold any bytes, YAML text cannot).
struct Printable {
    const std::string& text;
};

YAML::Emitter& operator<<(YAML::Emitter& out, Printable p) {
    std::string clean;
    bool plain = true;
    for (std::size_t i = 0; i < p.text.size();) {
        Utf8Char c = decodeUtf8(p.text, i);
        if (c.length == 0 || isDisplayControl(c.code) || c.code == 0xfffd) plain = false; // U+FFFD: prints the same again
        clean += c.length == 0 ? std::string_view("\xEF\xBF\xBD") : std::string_view(p.text).substr(i, c.length);
        i += c.length == 0 ? 1 : c.length;
    }
    if (plain) return out << p.text;
    return out << YAML::DoubleQuoted << YAML::EscapeNonAscii << clean;
}

} // namespace

std::string managerName(ManagerKind kind) { return nameOf(kind, kManagers); }

std::string Config::runtimeDir() const {
    if (!nixproc.runtime_dir.empty()) return nixproc.runtime_dir;
    return nixproc.state_dir == "/var" ? "/var/run" : nixproc.state_dir + "/run"; // nixproc-init-state's default
}

std::vector<std::string> Config::deployCommand() const {
    if (!deploy.command.empty()) return deploy.command;
    return {"nixproc-" + managerName(process_manager) + "-switch"};
}

namespace {

// Disnix's coordinator profile: disnix-deploy sets it and nixproc-disnix-deploy gives it no -p,
// so it is always `default` of the user running the switch (libmanifest/manifest.c,
// determine_previous_manifest_file: LOCALSTATEDIR/nix/profiles/per-user/USER/disnix-coordinator/).
// Disnix asks getpwuid for the name; a static init cannot use NSS, and runs as root anyway:
// another user is named by USER, as upstream images set it.
std::string disnixCoordinatorProfile(const std::map<std::string, std::string>& env) {
    std::string user = "root";
    if (auto it = env.find("USER"); ::geteuid() != 0 && it != env.end() && !it->second.empty()) user = it->second;
    return "/nix/var/nix/profiles/per-user/" + user + "/disnix-coordinator/default";
}

void resolveProfile(Config& config, const std::string& source, const std::map<std::string, std::string>& env) {
    if (config.process_manager == ManagerKind::Disnix) {
        std::string coordinator = disnixCoordinatorProfile(env);
        if (!config.profile.empty() && config.profile != coordinator)
            throw ConfigError(source + ": profile: disnix deploys to its coordinator profile " + coordinator +
                              " and nixproc-disnix-switch cannot be told another; leave profile unset");
        config.profile = coordinator;
        return;
    }
    if (config.profile.empty()) config.profile = "/nix/var/nix/profiles/processes";
    std::string name = std::filesystem::path(config.profile).filename().string();
    if (name.empty() || name == "." || name == "..")
        throw ConfigError(source + ": profile: " + config.profile + " must end in the profile's name (nixproc-<pm>-switch -p NAME)");
}

} // namespace

Config loadConfig(const CommandLine& cli, const std::map<std::string, std::string>& environment) {
    Config config;
    std::string file = cli.config_file.value_or(kDefaultConfigFile);
    FileContent content = readRegularFile(file);
    if (!cli.config_file && content.missing()) file.clear(); // no default file: defaults
    if (!file.empty()) {
        config.process_manager = ManagerKind::Supervisord; // a configured image runs a manager
        applyFile(config, file, content);
        config.source = file;
    }
    applyEnvironment(config, environment);
    applyCommandLine(config, cli);
    resolveProfile(config, file.empty() ? "the configuration" : file, environment);
    if (config.process_manager == ManagerKind::None && config.manager.command.empty())
        throw ConfigError("no command to run: give one after the options, or set process_manager in " +
                          std::string(file.empty() ? kDefaultConfigFile : file));
    return config;
}

std::string renderConfig(const Config& c) {
    YAML::Emitter out;
    auto list = [&](const std::vector<std::string>& v) {
        out << YAML::Flow << YAML::BeginSeq;
        for (const auto& s : v) out << Printable{s};
        out << YAML::EndSeq;
    };
    auto secs = [](std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; };
    out << YAML::BeginMap;
    out << YAML::Key << "process_manager" << YAML::Value << managerName(c.process_manager);
    out << YAML::Key << "processes" << YAML::Value << Printable{c.processes};
    out << YAML::Key << "profile" << YAML::Value << Printable{c.profile};
    out << YAML::Key << "watch" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "enabled" << YAML::Value << c.watch.enabled;
    out << YAML::Key << "extra" << YAML::Value;
    list(c.watch.extra);
    out << YAML::Key << "debounce_ms" << YAML::Value << c.watch.debounce.count() << YAML::EndMap;
    out << YAML::Key << "deploy" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "command" << YAML::Value;
    list(c.deployCommand());
    out << YAML::Key << "check" << YAML::Value;
    list(c.deploy.check);
    out << YAML::Key << "timeout_s" << YAML::Value << c.deploy.timeout.count();
    out << YAML::Key << "on_boot" << YAML::Value << nameOf(c.deploy.on_boot, kOnBoot);
    out << YAML::Key << "allow_insecure_model" << YAML::Value << c.deploy.allow_insecure_model;
    out << YAML::Key << "retries" << YAML::Value << c.deploy.retries;
    out << YAML::Key << "retry_backoff_s" << YAML::Value << c.deploy.retry_backoff.count();
    out << YAML::Key << "on_failure" << YAML::Value << nameOf(c.deploy.on_failure, kOnFailure) << YAML::EndMap;
    out << YAML::Key << "gc" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "keep_generations" << YAML::Value << c.gc.keep_generations;
    out << YAML::Key << "collect_after_deployments" << YAML::Value << c.gc.collect_after_deployments;
    out << YAML::Key << "collect_every_h" << YAML::Value << static_cast<double>(c.gc.collect_every.count()) / 3600.0;
    out << YAML::Key << "timeout_s" << YAML::Value << c.gc.timeout.count() << YAML::EndMap;
    out << YAML::Key << "control" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "socket" << YAML::Value << Printable{c.control.socket} << YAML::EndMap;
    out << YAML::Key << "bootstrap" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "channel" << YAML::Value << Printable{c.bootstrap.channel};
    out << YAML::Key << "timeout_s" << YAML::Value << c.bootstrap.timeout.count() << YAML::EndMap;
    out << YAML::Key << "nixproc" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "state_dir" << YAML::Value << Printable{c.nixproc.state_dir};
    out << YAML::Key << "runtime_dir" << YAML::Value << Printable{c.runtimeDir()};
    out << YAML::Key << "force_disable_user_change" << YAML::Value << c.nixproc.force_disable_user_change << YAML::EndMap;
    out << YAML::Key << "manager" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "command" << YAML::Value;
    list(c.manager.command);
    out << YAML::Key << "config" << YAML::Value << Printable{c.manager.config};
    out << YAML::Key << "runlevel" << YAML::Value << c.manager.runlevel;
    out << YAML::Key << "step_timeout_s" << YAML::Value << c.manager.step_timeout.count();
    out << YAML::Key << "workdir" << YAML::Value << Printable{c.manager.workdir} << YAML::EndMap;
    out << YAML::Key << "shutdown" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "grace_s" << YAML::Value << secs(c.shutdown.grace) << YAML::EndMap;
    out << YAML::Key << "state_dir" << YAML::Value << Printable{c.state_dir};
    out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "format" << YAML::Value << nameOf(c.log.format, kFormats);
    out << YAML::Key << "level" << YAML::Value << c.log.level << YAML::EndMap;
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

std::vector<std::string> environmentList(const std::map<std::string, std::string>& environment) {
    std::vector<std::string> out;
    for (const auto& [key, value] : environment) out.push_back(key + "=" + value);
    return out;
}

std::map<std::string, std::string> environmentMap(char** environ) {
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
        std::string kv = *e;
        auto eq = kv.find('=');
        if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return env;
}

} // namespace nixproc
