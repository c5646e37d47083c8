// The sysvinit backend against upstream's rc runner (nix-processmgmt 0e9ec77,
// tools/sysvinit/nixproc-sysvinit-runactivity.in:96-113 and nixproc-sysvinit-deploy.in:152,165):
// `ls $rcpath/S*` in the image's C locale to start, `| sort -r` to stop, and the same
// rc folder as the switch, which is told the runlevel.
#include "manager/ProcessManager.hpp"

#include "Scratch.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {

// The manager keeps a reference to its configuration: each test keeps the Config alive.
Config sysvinit(const std::string& profile, int runlevel = 3) {
    Config c;
    c.process_manager = ManagerKind::SysVinit;
    c.profile = profile;
    c.manager.runlevel = runlevel;
    return c;
}

void script(const fs::path& path, fs::perms mode = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                                    fs::perms::others_read | fs::perms::others_exec) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << "#!/bin/sh\nexit 0\n";
    fs::permissions(path, mode);
}

// The lines a shell command prints.
std::vector<std::string> shell(const std::string& command) {
    std::vector<std::string> lines;
    FILE* out = ::popen(command.c_str(), "r");
    REQUIRE(out);
    char buf[4096];
    while (std::fgets(buf, sizeof buf, out)) {
        std::string line(buf);
        if (!line.empty() && line.back() == '\n') line.pop_back();
        lines.push_back(line);
    }
    REQUIRE(::pclose(out) == 0);
    return lines;
}

std::vector<std::string> scripts(const std::vector<Step>& steps, const std::string& action) {
    std::vector<std::string> out;
    for (const auto& s : steps) {
        REQUIRE(s.argv.size() == 2);
        CHECK(s.argv[1] == action);
        out.push_back(s.argv[0]);
    }
    return out;
}

} // namespace

TEST_CASE("sysvinit tells the switch the runlevel whose rc folder it runs", "[manager]") {
    Scratch s;
    for (int level : {3, 4}) {
        Config config = sysvinit(s.dir + "/profile", level);
        auto manager = makeProcessManager(config);
        CHECK(manager->switchOptions() == std::vector<std::string>{"--runlevel", std::to_string(level)});
        CHECK(manager->layout()->folder == "etc/rc.d/rc" + std::to_string(level) + ".d");
    }
}

TEST_CASE("rc scripts start in the order of `ls S*` in the C locale and stop in the order of `sort -r`", "[manager]") {
    Scratch s;
    const fs::path rc = fs::path(s.dir) / "profile/etc/rc.d/rc3.d";
    // Names whose order differs between byte order and a UTF-8 locale's collation (case, '-', '_',
    // '.'), and between numbers and text (S2 after S10).
    for (const char* name : {"S00b", "S00a", "S10Web", "S10api", "S2x", "S10web-b", "S10web_a", "S10web.a", "S99z", "S10web"})
        script(rc / name);
    script(rc / "K01x");
    script(rc / "README");
    Config config = sysvinit(s.dir + "/profile");
    auto manager = makeProcessManager(config);

    auto ls = shell("cd / && LC_ALL=C ls " + rc.string() + "/S*");
    REQUIRE(ls.size() == 10);
    CHECK(scripts(manager->startSteps(), "start") == ls);
    auto reversed = shell("cd / && LC_ALL=C ls " + rc.string() + "/S* | LC_ALL=C sort -r");
    CHECK(scripts(manager->stopSteps(), "stop") == reversed);
    CHECK(manager->startSteps().front().label == "rc S00a start");
}

TEST_CASE("only rc entries that lead to a regular file no one else can write are run", "[manager]") {
    Scratch s;
    const fs::path store = fs::path(s.dir) / "store";
    const fs::path rc = fs::path(s.dir) / "profile/etc/rc.d/rc3.d";
    script(store / "ok");
    script(store / "open", fs::perms::all); // anyone could put their commands in it
    fs::create_directories(store / "shared");
    fs::permissions(store / "shared", fs::perms::all); // anyone could replace what is in it
    script(store / "shared/script");
    fs::create_directories(rc);
    fs::create_symlink(store / "ok", rc / "S50ok");
    fs::create_symlink(store / "open", rc / "S40open");
    fs::create_symlink(store / "shared/script", rc / "S45shared");
    fs::create_symlink(store / "missing", rc / "S30dangling");
    fs::create_directories(rc / "S20folder");
    REQUIRE(::mkfifo((rc / "S10fifo").c_str(), 0755) == 0);
    Config config = sysvinit(s.dir + "/profile");
    auto manager = makeProcessManager(config);
    CHECK(scripts(manager->startSteps(), "start") == std::vector<std::string>{(rc / "S50ok").string()});
    CHECK(scripts(manager->stopSteps(), "stop") == std::vector<std::string>{(rc / "S50ok").string()});
}

TEST_CASE("an rc folder that others can write runs nothing, and one that is a FIFO does not block", "[manager]") {
    Scratch s;
    const fs::path rc = fs::path(s.dir) / "profile/etc/rc.d/rc3.d";
    script(rc / "S10a");
    fs::permissions(rc, fs::perms::all);
    Config open = sysvinit(s.dir + "/profile");
    CHECK(makeProcessManager(open)->startSteps().empty());

    const fs::path fifo = fs::path(s.dir) / "fifo-profile/etc/rc.d/rc3.d";
    fs::create_directories(fifo.parent_path());
    REQUIRE(::mkfifo(fifo.c_str(), 0700) == 0);
    auto started = std::chrono::steady_clock::now();
    Config fifo_profile = sysvinit(s.dir + "/fifo-profile");
    CHECK(makeProcessManager(fifo_profile)->startSteps().empty());
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(1));
}

// sysvinit and disnix have no program of their own: their main child, if any, is the user's
// command, whose handlers the init cannot know. Like the plain init (tini does the same), they
// pass every signal on: the user sent it for that command.
TEST_CASE("sysvinit, disnix and the plain init pass every signal on to their main child", "[manager][signals]") {
    for (ManagerKind kind : {ManagerKind::SysVinit, ManagerKind::Disnix, ManagerKind::None}) {
        Config config;
        config.process_manager = kind;
        config.manager.command = {"sleep", "600"};
        auto manager = makeProcessManager(config);
        INFO(manager->name());
        CHECK(manager->commandRole() == CommandRole::Manager);
        CHECK(replacedCommandNotice(*manager, "COMMAND").empty());
        for (int sig : {SIGHUP, SIGUSR1, SIGALRM, SIGVTALRM, SIGTSTP, SIGRTMIN, SIGSEGV}) {
            INFO(sig);
            CHECK(manager->withheld(sig).empty());
        }
    }
}
