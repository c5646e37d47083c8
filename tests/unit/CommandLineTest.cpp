#include "cli/CommandLine.hpp"

#include <catch2/catch.hpp>

using namespace nixproc;
using namespace std::chrono_literals;

TEST_CASE("options stop at the command, and the command keeps its own options", "[cli]") {
    auto cl = parseCommandLine({"-s", "-t", "2.5", "sh", "-c", "exit 3", "-g"});
    CHECK(cl.subreaper);
    CHECK_FALSE(cl.process_group);
    CHECK(cl.grace == 2500ms);
    CHECK(cl.command == std::vector<std::string>{"sh", "-c", "exit 3", "-g"});
}

TEST_CASE("a double dash ends the options, even before something that looks like one", "[cli]") {
    auto cl = parseCommandLine({"-g", "--", "-weird-name", "x"});
    CHECK(cl.process_group);
    CHECK(cl.command == std::vector<std::string>{"-weird-name", "x"});
}

TEST_CASE("short flags combine, values attach or follow, long options take = or a word", "[cli]") {
    auto cl = parseCommandLine({"-sgvv", "-t5", "--config=/x.yaml", "--workdir", "/", "--check-config", "-q", "--", "true"});
    CHECK(cl.subreaper);
    CHECK(cl.process_group);
    CHECK(cl.verbosity == 1);
    CHECK(cl.grace == 5s);
    CHECK(cl.config_file == "/x.yaml");
    CHECK(cl.workdir == "/");
    CHECK(cl.check_config);
    CHECK(cl.command == std::vector<std::string>{"true"});
}

TEST_CASE("usage errors name the argument", "[cli]") {
    CHECK_THROWS_WITH(parseCommandLine({"-x", "true"}), "unknown option -x");
    CHECK_THROWS_WITH(parseCommandLine({"--frobnicate"}), "unknown option --frobnicate");
    CHECK_THROWS_WITH(parseCommandLine({"-t"}), "option -t needs a value");
    CHECK_THROWS_WITH(parseCommandLine({"--grace", "soon", "true"}),
                      "-t/--grace wants a number of seconds from 0 to 86400, not 'soon'");
    CHECK_THROWS_AS(parseCommandLine({"-t", "-1", "true"}), UsageError);
    CHECK_THROWS_AS(parseCommandLine({"-t", "1e9", "true"}), UsageError);
    CHECK_THROWS_WITH(parseCommandLine({"--help=yes"}), "option --help takes no value");
}

TEST_CASE("no arguments: no command", "[cli]") {
    auto cl = parseCommandLine({});
    CHECK(cl.command.empty());
    CHECK_FALSE(cl.grace);
}

TEST_CASE("an empty word as the command or as the configuration file is a usage error", "[cli]") {
    // Found by tests/fuzz: the command line took an empty program name the file refuses.
    CHECK_THROWS_WITH(parseCommandLine({"-s", "", "x"}), "the command's name is an empty word");
    CHECK_THROWS_WITH(parseCommandLine({"--", ""}), "the command's name is an empty word");
    CHECK_THROWS_WITH(parseCommandLine({"-c", "", "true"}), "option -c needs a file name, not an empty word");
    CHECK_THROWS_WITH(parseCommandLine({"--config=", "true"}), "option --config needs a file name, not an empty word");
    CHECK(parseCommandLine({"--", "true", ""}).command == std::vector<std::string>{"true", ""}); // an argument may be empty
}
