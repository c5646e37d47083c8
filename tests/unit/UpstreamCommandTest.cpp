// The Cmd of nix-processmgmt's images as nixproc-init's COMMAND, against fixtures shaped as
// upstream writes them (tests/fixtures/upstream/image-cmd/, each citing the .nix file).
#include "manager/UpstreamCommand.hpp"

#include "Scratch.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

using namespace nixproc;
namespace fs = std::filesystem;
using Kind = UpstreamCommand::Kind;

namespace {

const std::string kFixtures = std::string(SOURCE_DIR) + "/tests/fixtures/upstream/image-cmd";
const std::string kSysvinitProxy = kFixtures + "/sysvinit/nix/store/b23i9i27rga2p5n7pwdrc1qm0v7dfwil-compound-proxy-script";
const std::string kDisnixProxy = kFixtures + "/disnix/nix/store/5kj631qvzng4vf6rpp8jah13bha79033-compound-proxy-script";
const std::string kSupervisordWrapper =
    kFixtures + "/supervisord/nix/store/w8cf673745p61xcp5g0hc0wh16s3hylf-python3.10-supervisor-4.2.5/bin/supervisord";

std::string text(const std::string& path) {
    std::ostringstream out;
    out << std::ifstream(path).rdbuf();
    return out.str();
}

// The fixture without its own header (the lines naming it a fixture): what upstream wrote.
std::string upstreamText(const std::string& path) {
    std::istringstream in(text(path));
    std::string out;
    bool header = false;
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("# Test fixture")) header = true;
        else if (header && !line.starts_with("# ")) header = false;
        if (!header) out += line + "\n";
    }
    return out;
}

std::optional<UpstreamCommand> recognised(const std::string& path) { return recogniseUpstreamScript(path, text(path)); }

Config withCommand(ManagerKind manager, std::vector<std::string> command) {
    Config c;
    c.process_manager = manager;
    c.manager.command = std::move(command);
    return c;
}

} // namespace

TEST_CASE("each Cmd of nix-processmgmt's images is recognised by its file name and content", "[upstream]") {
    struct Case {
        std::string path;
        Kind kind;
        std::string manager;
    };
    for (const auto& c : std::vector<Case>{
             {kFixtures + "/sysvinit/bin/bootstrap", Kind::Bootstrap, "sysvinit"},
             {kFixtures + "/disnix/bin/bootstrap", Kind::Bootstrap, "disnix"},
             {kFixtures + "/supervisord/bin/bootstrap", Kind::Bootstrap, "supervisord"},
             {kSysvinitProxy, Kind::CompoundProxy, "sysvinit"},
             {kDisnixProxy, Kind::CompoundProxy, "disnix"},
             {kFixtures + "/s6-rc/bin/init", Kind::S6LinuxInit, "s6-rc"},
         }) {
        INFO(c.path);
        for (const std::string& content : {text(c.path), upstreamText(c.path)}) {
            auto found = recogniseUpstreamScript(c.path, content);
            REQUIRE(found);
            CHECK(found->kind == c.kind);
            CHECK(found->manager == c.manager);
            CHECK_THAT(found->what, Catch::StartsWith(c.path + ", "));
        }
    }
    // The content alone, under another name (a copy somewhere else), still says what it is.
    CHECK(recogniseUpstreamScript("/usr/local/bin/start", text(kSysvinitProxy))->manager == "sysvinit");
    // The name alone, when the content could not be read: a store path's name is upstream's.
    CHECK(recogniseUpstreamScript("/nix/store/b23i9i27rga2p5n7pwdrc1qm0v7dfwil-compound-proxy-script", "")->kind == Kind::CompoundProxy);
    CHECK(recogniseUpstreamScript("/nix/store/r3l5al1cdp85mwqdm41syfl6x0jd4f0l-s6-linux-init-1.1.1.0-bin/bin/s6-linux-init", "")->kind ==
          Kind::S6LinuxInit);
}

TEST_CASE("a bootstrap that has run once is what it execs", "[upstream]") {
    // It execs the compound proxy by its store path, which is not on this machine: known by name.
    auto sysvinit = recognised(kFixtures + "/sysvinit-restarted/bin/bootstrap");
    REQUIRE(sysvinit);
    CHECK(sysvinit->kind == Kind::Bootstrap);
    CHECK_THAT(sysvinit->what, Catch::Contains("after its first run") &&
                                   Catch::Contains("execs /nix/store/b23i9i27rga2p5n7pwdrc1qm0v7dfwil-compound-proxy-script"));
    // Once it has run, supervisord's bootstrap is `exec supervisord ...`: the manager's own command.
    CHECK_FALSE(recognised(kFixtures + "/supervisord-restarted/bin/bootstrap"));
}

TEST_CASE("supervisord's upstream Cmd and other commands are not taken for upstream's scripts", "[upstream]") {
    CHECK_FALSE(recognised(kSupervisordWrapper));
    CHECK_FALSE(recogniseUpstreamCommand({"supervisord", "--nodaemon", "--configuration", "/etc/supervisor/supervisord.conf"},
                                         "/usr/bin:/bin"));
    CHECK_FALSE(recogniseUpstreamCommand({"sh", "-c", "exec sleep 1"}, "/usr/bin:/bin"));
    CHECK_FALSE(recogniseUpstreamCommand({std::string(SOURCE_DIR) + "/tests/standins/nixproc-sysvinit-switch"}, "/usr/bin:/bin"));
    CHECK_FALSE(recogniseUpstreamCommand({"no-such-command-here"}, "/usr/bin:/bin"));
    // A script that merely mentions the tools does nothing of theirs.
    CHECK_FALSE(recogniseUpstreamScript("/bin/bootstrap", "#!/bin/sh\n# runs nixproc-sysvinit-switch & nix-channel\nexec sleep 1\n"));
}

TEST_CASE("the command is found on PATH and read without blocking, at most a few KiB", "[upstream]") {
    auto bootstrap = recogniseUpstreamCommand({"bootstrap"}, (kFixtures + "/sysvinit/bin").c_str());
    REQUIRE(bootstrap);
    CHECK(bootstrap->what == kFixtures + "/sysvinit/bin/bootstrap, nix-processmgmt's bootstrap script for sysvinit "
                                         "(nixproc/create-image-from-steps/steps/bootstrap-init.nix)");

    Scratch s;
    // A FIFO in the command's place is not opened (the read would block): its name still counts.
    const std::string fifo = s.dir + "/x-compound-proxy-script";
    REQUIRE(::mkfifo(fifo.c_str(), 0755) == 0);
    auto proxy = recogniseUpstreamCommand({fifo}, "/usr/bin:/bin");
    REQUIRE(proxy);
    CHECK(proxy->kind == Kind::CompoundProxy);
    // A file past the cap is not read: upstream's scripts are a few hundred bytes.
    const std::string big = s.dir + "/start";
    std::ofstream(big) << text(kSysvinitProxy) << std::string(kUpstreamCommandBytes, '#');
    fs::permissions(big, fs::perms::owner_all);
    CHECK_FALSE(recogniseUpstreamCommand({big}, "/usr/bin:/bin"));
}

TEST_CASE("the refusal says what was recognised, why it cannot run, and what to do", "[upstream]") {
    auto sysvinit = upstreamCommandRefusal(withCommand(ManagerKind::SysVinit, {kSysvinitProxy}), "/usr/bin:/bin");
    CHECK_THAT(sysvinit, Catch::StartsWith("the command " + kSysvinitProxy +
                                           " is nix-processmgmt's compound proxy script for sysvinit (nixproc/backends/util/"
                                           "generate-compound-proxy.nix"));
    CHECK_THAT(sysvinit, Catch::Contains("every rc script would be started and stopped twice. Not starting anything. Build the "
                                         "image with `bootstrap = false` and its Cmd set to [], or give docker run --entrypoint"));

    auto bootstrap = upstreamCommandRefusal(withCommand(ManagerKind::Supervisord, {kFixtures + "/supervisord/bin/bootstrap"}), "");
    CHECK_THAT(bootstrap, Catch::Contains("adds and updates a Nix channel, starts nixproc-supervisord-switch in the background") &&
                              Catch::Contains("its Cmd set to [] or to supervisord's own command (supervisord --nodaemon "
                                              "--configuration /etc/supervisor/supervisord.conf)") &&
                              Catch::Contains("sets up the channel (bootstrap.channel) and deploys the model itself"));

    auto disnix = upstreamCommandRefusal(withCommand(ManagerKind::Disnix, {kDisnixProxy}), "");
    CHECK_THAT(disnix, Catch::Contains("every service would be activated and deactivated twice"));

    // s6-linux-init cannot run as anything but PID 1, whatever the configuration.
    auto s6 = upstreamCommandRefusal(withCommand(ManagerKind::None, {kFixtures + "/s6-rc/bin/init"}), "");
    CHECK_THAT(s6, Catch::Contains("s6-linux-init's stage 1") && Catch::Contains("it must run as PID 1"));

    // A plain init (no manager, no deployments): the bootstrap and the proxy run as under tini.
    CHECK(upstreamCommandRefusal(withCommand(ManagerKind::None, {kFixtures + "/sysvinit/bin/bootstrap"}), "").empty());
    CHECK(upstreamCommandRefusal(withCommand(ManagerKind::None, {kSysvinitProxy}), "").empty());
    auto deploys = withCommand(ManagerKind::None, {kSysvinitProxy});
    deploys.deploy.command = {"nixproc-sysvinit-switch"};
    CHECK_FALSE(upstreamCommandRefusal(deploys, "").empty());

    // supervisord's upstream Cmd (supervisord.nix:6), and the wrapper nixpkgs makes of it.
    CHECK(upstreamCommandRefusal(withCommand(ManagerKind::Supervisord,
                                             {"supervisord", "--nodaemon", "--configuration", "/etc/supervisor/supervisord.conf",
                                              "--logfile", "/var/log/supervisord.log", "--pidfile", "/var/run/supervisord.pid"}),
                                 "/usr/bin:/bin")
              .empty());
    CHECK(upstreamCommandRefusal(withCommand(ManagerKind::Supervisord, {kSupervisordWrapper, "--nodaemon"}), "").empty());
}
