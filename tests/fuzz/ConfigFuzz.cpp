// config-fuzz: a deterministic mutation fuzzer for what the init reads before it starts anything:
// the configuration file, the NIXPROC_INIT_* environment and the command line.
//
//   config-fuzz [ITERATIONS [SEED]]        default: 5000 iterations, seed 1
//
// ctest runs it (label fuzz) in the normal and the ASan+UBSan build; run it longer by hand, e.g.
//   build-asan/tests/config-fuzz 1000000 $RANDOM
// The seeds are config/init.yaml and every string literal of tests/unit/ConfigTest.cpp that looks
// like YAML, mutated (bytes, YAML tokens, keys, values, lines, nesting, splices) with a seeded PRNG,
// so ITERATIONS and SEED name one exact run. Each input goes through parseCommandLine and
// loadConfig; it fails on anything but a UsageError or a ConfigError whose message starts with the
// place (FILE:LINE:COL, FILE, or the environment variable), on a loaded configuration that
// --check-config does not print back to itself, and (through the process dying) on a crash or a
// sanitizer report. The input being tried is always in the file named at start; after a crash it
// holds the culprit (`nixproc-init --check-config -c FILE` replays it).
#include "cli/CommandLine.hpp"
#include "config/Config.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <typeinfo>
#include <unistd.h>
#include <vector>

using namespace nixproc;

namespace {

std::string readAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void writeAll(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
    if (!out.flush()) {
        std::fprintf(stderr, "config-fuzz: cannot write %s\n", path.c_str());
        std::exit(2);
    }
}

// The string literals of a C++ source ("...", with \n \t \" \\ \xNN escapes and adjacent literals
// joined), the ones that look like YAML.
std::vector<std::string> yamlLiterals(const std::string& source) {
    std::vector<std::string> out;
    std::string current;
    bool joined = false;
    for (std::size_t i = 0; i < source.size(); ++i) {
        char c = source[i];
        if (c == '\'' && i + 2 < source.size()) { // skip a character literal such as '"' or '['
            i += source[i + 1] == '\\' ? 3 : 2;
            continue;
        }
        if (c != '"') {
            if (!std::isspace(static_cast<unsigned char>(c))) {
                if (joined && (current.find(':') != std::string::npos || current.find('\n') != std::string::npos))
                    out.push_back(current);
                joined = false;
                current.clear();
            }
            continue;
        }
        for (++i; i < source.size() && source[i] != '"'; ++i) {
            if (source[i] != '\\') {
                current += source[i];
                continue;
            }
            char e = source[++i];
            if (e == 'n') current += '\n';
            else if (e == 't') current += '\t';
            else if (e == 'r') current += '\r';
            else if (e == '0') current += '\0';
            else if (e == 'x') {
                std::size_t end = i + 1;
                while (end < source.size() && std::isxdigit(static_cast<unsigned char>(source[end])) && end < i + 3) ++end;
                current += static_cast<char>(std::stoi(source.substr(i + 1, end - i - 1), nullptr, 16));
                i = end - 1;
            } else current += e;
        }
        joined = true;
    }
    return out;
}

const std::vector<std::string> kTokens{
    ": ", ":", "- ", "-", "[", "]", "{", "}", ",", "? ", "&a ", "*a", "&b ", "*b", "!!str ", "!!int ", "!!map ", "!!seq ",
    "!!binary ", "!custom ", "!<tag:yaml.org,2002:str> ", "<<: ", "|\n  ", ">-\n  ", "\"", "'", "#", "%YAML 1.2\n---\n",
    "---\n", "...\n", "\n", "\r\n", "\r", "\t", "  ", "    ", "~", "null", "true", "false", "yes", "0", "-1", "1e999",
    "nan", ".inf", "-.inf", "0x10", "0o7", "99999999999999999999", "1.5", "1e-400", "\"\\e[2J\"", "\"\\x00\"",
    "\"\\u202e\"", "\"\\uD800\"", "\"\\U0010FFFF\"", "'it''s'", "\xEF\xBB\xBF", "\xff", "\xfe", "\xc3", "\xc3\xa9", "\xc2\x9b",
    "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "\xe2\x80\xae", "\x1b[2J", std::string(1, '\0'), "\x7f", "\x01",
    "/", "/abs/path", "relative", "..", "[a, b]", "{a: 1}", "[[[[[[[[", "]]]]]]]]", "{{{{{{{{", "[]", "{}", "\"\"",
};

const std::vector<unsigned char> kBytes{0x00, 0x09, 0x0a, 0x0d, 0x1b, 0x20, 0x7f, 0x80, 0x85, 0x9b, 0xa0, 0xbf, 0xc0,
                                        0xc2, 0xc3, 0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf8, 0xfe, 0xff, ':', '-', '[', ']',
                                        '{', '}', '&', '*', '!', '?', '|', '>', '"', '\'', '#', '%', '@', '`', ',', ' '};

class Mutator {
public:
    // `valid`: the seeds that load as they are; half of the inputs start from one of them, so that
    // mutants get past the parser into the schema, and some load (and are printed back).
    Mutator(std::uint64_t seed, std::vector<std::string> seeds, std::vector<std::string> valid, std::vector<std::string> keys)
        : rng_(seed), seeds_(std::move(seeds)), valid_(std::move(valid)), keys_(std::move(keys)) {}

    std::size_t below(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
    bool chance(int percent) { return below(100) < static_cast<std::size_t>(percent); }
    template <class T>
    const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }

    std::string input() {
        std::string s = chance(50) && !valid_.empty() ? pick(valid_) : pick(seeds_);
        for (std::size_t n = chance(50) ? 1 : 1 + below(8); n > 0; --n) mutate(s); // half of them close to a seed
        if (s.size() > 200000) s.resize(200000); // nesting bombs are built in few steps; keep each run short
        return s;
    }

    std::string value() {
        std::string v = chance(50) ? pick(kTokens) : pick(seeds_).substr(0, below(40));
        if (chance(30)) mutate(v);
        return v;
    }

    const std::string& key() { return pick(keys_); }

private:
    void mutate(std::string& s) {
        std::size_t at = below(s.size() + 1);
        switch (below(12)) {
        case 0: // flip a bit
            if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1 << below(8));
            break;
        case 1: // an interesting byte
            if (!s.empty()) s[below(s.size())] = static_cast<char>(pick(kBytes));
            break;
        case 2: s.insert(at, pick(kTokens)); break;
        case 3: { // a key of the schema, as a line
            std::string k = key();
            auto dot = k.find('.');
            s.insert(at, dot == std::string::npos ? k + ": " + value() + "\n"
                                                  : k.substr(0, dot) + ":\n  " + k.substr(dot + 1) + ": " + value() + "\n");
            break;
        }
        case 4: s.erase(at, below(16)); break;
        case 5: { // repeat a piece: nesting, long values, duplicate keys
            std::string piece = s.substr(at, 1 + below(12));
            std::size_t times = chance(10) ? 1 + below(20000) : 1 + below(8);
            std::string rep;
            for (std::size_t i = 0; i < times && rep.size() < 100000; ++i) rep += piece;
            s.insert(at, rep);
            break;
        }
        case 6: { // splice another seed in at a line start
            const std::string& other = pick(seeds_);
            std::size_t from = other.find('\n', below(other.size() + 1));
            s.insert(s.rfind('\n', at) == std::string::npos ? 0 : s.rfind('\n', at) + 1,
                     from == std::string::npos ? other : other.substr(from + 1));
            break;
        }
        case 7: { // swap two lines
            auto lines = split(s);
            if (lines.size() > 1) std::swap(lines[below(lines.size())], lines[below(lines.size())]);
            s = join(lines);
            break;
        }
        case 8: { // change a line's indentation
            auto lines = split(s);
            if (lines.empty()) break;
            auto& line = lines[below(lines.size())];
            if (chance(50)) line.insert(0, std::string(1 + below(6), chance(90) ? ' ' : '\t'));
            else line.erase(0, std::min(line.find_first_not_of(' '), below(6)));
            s = join(lines);
            break;
        }
        case 9: { // replace a value after ": " with another
            auto colon = s.find(": ", at);
            if (colon == std::string::npos) break;
            auto end = s.find('\n', colon);
            s.replace(colon + 2, end == std::string::npos ? std::string::npos : end - colon - 2, value());
            break;
        }
        case 10: s.resize(at); break;
        case 11: s.insert(at, std::string(1, static_cast<char>(below(256)))); break;
        }
    }

    static std::vector<std::string> split(const std::string& s) {
        std::vector<std::string> lines;
        std::stringstream ss(s);
        for (std::string line; std::getline(ss, line);) lines.push_back(line);
        return lines;
    }
    static std::string join(const std::vector<std::string>& lines) {
        std::string s;
        for (const auto& l : lines) s += l + "\n";
        return s;
    }

    std::mt19937_64 rng_;
    std::vector<std::string> seeds_;
    std::vector<std::string> valid_;
    std::vector<std::string> keys_;
};

// The schema's keys as --check-config prints them ("deploy.timeout_s").
std::vector<std::string> schemaKeys() {
    Config defaults;
    std::stringstream ss(renderConfig(defaults));
    std::vector<std::string> keys;
    std::string section;
    for (std::string line; std::getline(ss, line);) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        bool nested = line.starts_with("  ");
        std::string name = line.substr(nested ? 2 : 0, colon - (nested ? 2 : 0));
        if (!nested && colon + 1 == line.size()) section = name;
        else keys.push_back(nested ? section + "." + name : name);
    }
    return keys;
}

std::string envName(const std::string& key) {
    std::string name = "NIXPROC_INIT_";
    for (char c : key) name += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return name;
}

// Printable, for the report: C escapes for everything but printable ASCII.
std::string shown(const std::string& bytes, std::size_t max = 2000) {
    std::string out;
    for (unsigned char c : bytes.substr(0, max)) {
        if (c == '\n') out += "\\n\n";
        else if (c >= 0x20 && c < 0x7f && c != '\\') out += static_cast<char>(c);
        else {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        }
    }
    return bytes.size() > max ? out + "..." : out;
}

} // namespace

int main(int argc, char** argv) {
    const long iterations = argc > 1 ? std::atol(argv[1]) : 5000;
    const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;

    std::vector<std::string> seeds{readAll(SOURCE_DIR "/config/init.yaml")};
    for (auto& literal : yamlLiterals(readAll(SOURCE_DIR "/tests/unit/ConfigTest.cpp"))) seeds.push_back(literal);
    seeds.erase(std::remove(seeds.begin(), seeds.end(), std::string()), seeds.end());
    if (seeds.size() < 20 || seeds.front().size() < 100) {
        std::fprintf(stderr, "config-fuzz: too few seeds (%zu): are config/init.yaml and tests/unit/ConfigTest.cpp there?\n", seeds.size());
        return 2;
    }
    auto keys = schemaKeys();

    // On tmpfs when there is one: ext4 flushes a file truncated and written again (auto_da_alloc),
    // which made the run ten times slower than the loader.
    std::string tmp = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = tmp + "/config-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return 2;
    const std::string dir = tmpl, file = dir + "/init.yaml", echo = dir + "/printed.yaml";
    std::vector<std::string> valid;
    for (const auto& s : seeds) {
        writeAll(file, s);
        try {
            loadConfig(parseCommandLine({"-c", file}), {});
            valid.push_back(s);
        } catch (const ConfigError&) {
        }
    }
    Mutator mutator(seed, seeds, valid, keys);
    std::printf("config-fuzz: %ld iterations, seed %llu, %zu seeds (%zu load), %zu keys; the input being tried is %s\n",
                iterations, static_cast<unsigned long long>(seed), seeds.size(), valid.size(), keys.size(), file.c_str());
    std::fflush(stdout);

    const std::vector<std::string> configPaths{file, file, file, file, dir, "/dev/null", dir + "/missing.yaml"};
    const std::vector<std::string> argWords{"-c", "--config", "--config=", "-t", "--grace", "--grace=", "-w", "--workdir=/",
                                            "-s", "-g", "-v", "-q", "-vvvv", "-qqqq", "-sgv", "--check-config", "--version",
                                            "--help", "--", "-", "-x", "--frob", "--help=1", "-t5", "-t-1", "-t1e999",
                                            "-tnan", "-t0x10", "-t86400.0001", "-t 1", "true", "sh", "\xff", ""};
    std::map<std::string, long> outcomes;
    auto started = std::chrono::steady_clock::now();
    for (long n = 0; n < iterations; ++n) {
        std::string yaml = mutator.input();
        writeAll(file, yaml);

        std::vector<std::string> args{"-c", file};
        if (mutator.chance(30))
            for (std::size_t k = mutator.below(6); k > 0; --k) {
                std::string w = mutator.pick(argWords);
                if (w == "-c" || w == "--config") args.insert(args.end(), {w, mutator.pick(configPaths)});
                else args.push_back(w == "--config=" ? w + mutator.pick(configPaths) : w);
            }
        if (mutator.chance(20)) args.insert(args.end(), {"--", "true"});
        std::map<std::string, std::string> env;
        if (mutator.chance(25))
            for (std::size_t k = 1 + mutator.below(2); k > 0; --k)
                env[mutator.chance(90) ? envName(mutator.key()) : (mutator.chance(50) ? "NIXPROC_PROCESSES" : "NIXPROC_INIT_FROB")] =
                    mutator.value();

        std::string failure, where;
        try {
            CommandLine cli = parseCommandLine(args);
            where = cli.config_file.value_or(kDefaultConfigFile);
            Config c = loadConfig(cli, env);
            // What --check-config prints must load back to the same configuration.
            std::string printed = renderConfig(c);
            writeAll(echo, printed);
            std::string again = renderConfig(loadConfig(parseCommandLine({"-c", echo}), {}));
            if (again != printed) failure = "--check-config printed a configuration that loads differently:\n" + printed + "\nthen:\n" + again;
            else ++outcomes["loaded"];
        } catch (const UsageError&) {
            ++outcomes["usage error"];
        } catch (const ConfigError& e) {
            std::string msg = e.what();
            static const std::regex placed(R"(^(:\d+:\d+: |: ))");
            bool at_file = msg.starts_with(where) && std::regex_search(msg.substr(where.size()), placed);
            bool at_env = msg.starts_with("environment variable NIXPROC_");
            bool no_command = msg.starts_with("no command to run");
            if (!at_file && !at_env && !no_command) failure = "a ConfigError that does not start with its place: " + msg;
            else if (msg.size() > 400 + where.size()) failure = "a ConfigError too long for a log line: " + msg;
            else ++outcomes[at_env ? "environment error" : no_command ? "no command" : "file error"];
        } catch (const std::exception& e) {
            failure = std::string("not a ConfigError or UsageError: ") + typeid(e).name() + ": " + e.what();
        } catch (...) {
            failure = "an exception that is not even a std::exception";
        }
        if (!failure.empty()) {
            std::string env_text;
            for (const auto& [k, v] : env) env_text += " " + k + "=" + shown(v, 200);
            std::printf("config-fuzz: FAILED at iteration %ld (seed %llu): %s\n  args:", n, static_cast<unsigned long long>(seed),
                        failure.c_str());
            for (const auto& a : args) std::printf(" '%s'", shown(a, 200).c_str());
            std::printf("\n  environment:%s\n  input (kept in %s):\n%s\n", env_text.c_str(), file.c_str(), shown(yaml).c_str());
            return 1;
        }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("config-fuzz: %ld inputs in %.1f s:", iterations, secs);
    for (const auto& [what, count] : outcomes) std::printf(" %s %ld,", what.c_str(), count);
    std::printf(" no failure\n");
    std::filesystem::remove_all(dir);
    return 0;
}
