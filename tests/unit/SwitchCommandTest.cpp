// How the switch is invoked: the options and environment nix-processmgmt's tools read
// (tools/commonchecks, tools/*/nixproc-*-switch.in, tools/common/nixproc-build.in at 0e9ec77).
#include "deploy/SwitchCommand.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <stdlib.h>

using namespace nixproc;

namespace {

Config configFor(ManagerKind kind, std::string profile = "/nix/var/nix/profiles/processes") {
    Config c;
    c.process_manager = kind;
    c.profile = std::move(profile);
    return c;
}

struct FakeManager : ProcessManager {
    std::vector<std::string> options, environment;
    std::string name() const override { return "fake"; }
    std::vector<std::string> command() const override { return {}; }
    std::vector<std::string> switchOptions() const override { return options; }
    std::vector<std::string> deployEnvironment() const override { return environment; }
};

std::optional<std::string> envValue(const SwitchInvocation& s, const std::string& key) {
    for (const auto& kv : s.environment)
        if (kv.starts_with(key + "=")) return kv.substr(key.size() + 1);
    return std::nullopt;
}

} // namespace

TEST_CASE("the default switch runs with no options, as upstream's bootstrap runs it") {
    FakeManager m;
    auto s = switchInvocation(configFor(ManagerKind::Supervisord), m, "/var/lib/nixproc-init/model/processes.nix",
                              {{"PATH", "/bin"}, {"NIX_USER_PROFILE_DIR", "/elsewhere"}});
    CHECK(s.argv == std::vector<std::string>{"nixproc-supervisord-switch"});
    CHECK(envValue(s, "NIXPROC_PROCESSES") == "/var/lib/nixproc-init/model/processes.nix");
    CHECK_FALSE(envValue(s, "NIX_USER_PROFILE_DIR")); // an inherited one would move the profile
    REQUIRE(s.notes.size() == 1);
    CHECK(s.notes.front() == "NIX_USER_PROFILE_DIR=/elsewhere from the environment is not given to the switch: the profile is "
                             "/nix/var/nix/profiles/processes (the configuration's `profile`)");
    CHECK(envValue(s, "PATH") == "/bin");
}

TEST_CASE("a profile with another name is passed as -p NAME and another folder as NIX_USER_PROFILE_DIR") {
    FakeManager m;
    auto s = switchInvocation(configFor(ManagerKind::Supervisord, "/nix/var/nix/profiles/web"), m, "/m.nix", {});
    CHECK(s.argv == std::vector<std::string>{"nixproc-supervisord-switch", "-p", "web"});
    CHECK_FALSE(envValue(s, "NIX_USER_PROFILE_DIR"));
    s = switchInvocation(configFor(ManagerKind::Supervisord, "/srv/profiles/processes"), m, "/m.nix", {});
    CHECK(s.argv == std::vector<std::string>{"nixproc-supervisord-switch"});
    CHECK(envValue(s, "NIX_USER_PROFILE_DIR") == "/srv/profiles");
    CHECK(s.profile_environment == std::vector<std::string>{"NIX_USER_PROFILE_DIR=/srv/profiles"});
}

TEST_CASE("the profile folder is compared with NIX_STATE_DIR's profiles, as commonchecks composes it") {
    FakeManager m;
    auto s = switchInvocation(configFor(ManagerKind::Supervisord, "/nix/var/nix/profiles/processes"), m, "/m.nix",
                              {{"NIX_STATE_DIR", "/state"}});
    CHECK(envValue(s, "NIX_USER_PROFILE_DIR") == "/nix/var/nix/profiles");
}

TEST_CASE("state and runtime folders other than upstream's become --state-dir and --runtime-dir") {
    FakeManager m;
    Config c = configFor(ManagerKind::Supervisord);
    c.nixproc.state_dir = "/srv/state";
    auto s = switchInvocation(c, m, "/m.nix", {{"NIXPROC_RUNTIME_DIR", "/x"}, {"NIXPROC_STATE_DIR", "/y"}});
    CHECK(s.argv == std::vector<std::string>{"nixproc-supervisord-switch", "--state-dir", "/srv/state", "--runtime-dir",
                                             "/srv/state/run"});
    // nixproc-build.in:159-162 would turn NIXPROC_RUNTIME_DIR into --argstr stateDir, overriding the option.
    CHECK_FALSE(envValue(s, "NIXPROC_RUNTIME_DIR"));
    CHECK_FALSE(envValue(s, "NIXPROC_STATE_DIR"));
    c.nixproc.state_dir = "/var";
    c.nixproc.runtime_dir = "/run";
    s = switchInvocation(c, m, "/m.nix", {});
    CHECK(s.argv == std::vector<std::string>{"nixproc-supervisord-switch", "--state-dir", "/var", "--runtime-dir", "/run"});
}

TEST_CASE("force_disable_user_change and the manager's own options are appended") {
    FakeManager m;
    m.options = {"--runlevel", "5"};
    Config c = configFor(ManagerKind::SysVinit);
    c.nixproc.force_disable_user_change = true;
    auto s = switchInvocation(c, m, "/m.nix", {{"NIXPROC_FORCE_DISABLE_USER_CHANGE", "1"}});
    CHECK(s.argv == std::vector<std::string>{"nixproc-sysvinit-switch", "--force-disable-user-change", "--runlevel", "5"});
    CHECK_FALSE(envValue(s, "NIXPROC_FORCE_DISABLE_USER_CHANGE"));
}

TEST_CASE("disnix gets no -p: its switch deploys to the coordinator profile") {
    FakeManager m;
    auto s = switchInvocation(configFor(ManagerKind::Disnix, "/nix/var/nix/profiles/per-user/root/disnix-coordinator/default"),
                              m, "/m.nix", {{"NIX_USER_PROFILE_DIR", "/kept"}});
    CHECK(s.argv == std::vector<std::string>{"nixproc-disnix-switch"});
    CHECK(envValue(s, "NIX_USER_PROFILE_DIR") == "/kept");
}

// A profile folder with generations 1..n of `name`, each a link to a folder of its own (as a store
// path), the profile link naming `current`.
struct Generations {
    std::string dir;
    std::string profile;
    Generations(unsigned n, unsigned current, const std::string& name = "processes") {
        char templ[] = "/tmp/nixproc-gen-XXXXXX";
        dir = ::mkdtemp(templ);
        profile = dir + "/" + name;
        for (unsigned g = 1; g <= n; ++g) {
            std::filesystem::create_directories(dir + "/store/" + std::to_string(g));
            std::filesystem::create_symlink(dir + "/store/" + std::to_string(g), profile + "-" + std::to_string(g) + "-link");
        }
        std::filesystem::create_symlink(name + "-" + std::to_string(current) + "-link", profile);
    }
    ~Generations() { std::filesystem::remove_all(dir); }
};

TEST_CASE("a rollback is the switch's own --rollback, with the options and environment of its deployments") {
    FakeManager m;
    Generations g(3, 3);
    Config c = configFor(ManagerKind::Supervisord, g.profile);
    c.deploy.command = {"nixproc-supervisord-switch"};
    auto plan = rollbackPlan(c, m, std::nullopt, {});
    REQUIRE(plan.refusal.empty());
    CHECK(plan.from == 3);
    CHECK(plan.to == 2);
    CHECK(plan.invocation.steps == std::vector<std::vector<std::string>>{{"nixproc-supervisord-switch", "--rollback"}});
    CHECK(envValue(plan.invocation, "NIX_USER_PROFILE_DIR") == g.dir);
    CHECK(envValue(plan.invocation, "NIXPROC_PROCESSES") == ""); // a misread option deploys no model
}

TEST_CASE("a rollback to a generation that is not the previous makes it the previous first, as only then upstream's --rollback takes it") {
    FakeManager m;
    Generations g(3, 3, "web");
    Config c = configFor(ManagerKind::S6Rc, g.profile);
    c.deploy.command = {"nixproc-s6-rc-switch"};
    auto plan = rollbackPlan(c, m, 1u, {});
    REQUIRE(plan.refusal.empty());
    CHECK(plan.to == 1);
    CHECK(plan.invocation.steps == std::vector<std::vector<std::string>>{
                                       {"nix-env", "-p", g.profile, "--set", g.dir + "/store/1"},
                                       {"nix-env", "-p", g.profile, "--set", g.dir + "/store/3"},
                                       {"nixproc-s6-rc-switch", "-p", "web", "--rollback"}});
}

TEST_CASE("a rollback with nowhere to go is refused before anything runs, saying why") {
    FakeManager m;
    Config c = configFor(ManagerKind::Supervisord);
    c.deploy.command = {"nixproc-supervisord-switch"};
    SECTION("one generation") {
        Generations g(1, 1);
        c.profile = g.profile;
        CHECK(rollbackPlan(c, m, std::nullopt, {}).refusal == "generation 1 is the only one of " + g.profile + ": nothing to roll back to");
    }
    SECTION("the current generation") {
        Generations g(2, 2);
        c.profile = g.profile;
        CHECK(rollbackPlan(c, m, 2u, {}).refusal == "generation 2 is the current one of " + g.profile);
    }
    SECTION("a generation that is not there") {
        Generations g(2, 2);
        c.profile = g.profile;
        CHECK(rollbackPlan(c, m, 7u, {}).refusal == g.profile + " has no generation 7");
    }
    SECTION("another profile's links beside it, which upstream's glob would take") {
        Generations g(2, 2);
        c.profile = g.profile;
        std::filesystem::create_symlink(g.dir + "/store/1", g.profile + "-old-1-link");
        CHECK_THAT(rollbackPlan(c, m, std::nullopt, {}).refusal, Catch::Contains("processes-old-1-link"));
    }
    SECTION("no profile yet") {
        c.profile = "/nonexistent/processes";
        CHECK(rollbackPlan(c, m, std::nullopt, {}).refusal == "/nonexistent/processes has no generation yet: nothing to roll back to");
    }
    SECTION("a deploy command of the user's own") {
        Generations g(2, 2);
        c.profile = g.profile;
        c.deploy.command = {"my-deploy"};
        CHECK_THAT(rollbackPlan(c, m, std::nullopt, {}).refusal, Catch::Contains("how it rolls back is unknown"));
    }
    SECTION("sysvinit's switch with a profile that is not `processes`, which its --rollback ignores") {
        Generations g(2, 2, "web");
        c.profile = g.profile;
        c.process_manager = ManagerKind::SysVinit;
        c.deploy.command = {"nixproc-sysvinit-switch"};
        CHECK_THAT(rollbackPlan(c, m, std::nullopt, {}).refusal, Catch::Contains("acts on the profile `processes`"));
    }
}

TEST_CASE("disnix rolls back with disnix-env, as its nixproc switch never finds a generation") {
    FakeManager m;
    Generations g(3, 3, "default");
    Config c = configFor(ManagerKind::Disnix, g.profile);
    c.deploy.command = {"nixproc-disnix-switch"};
    CHECK(rollbackPlan(c, m, std::nullopt, {}).invocation.steps == std::vector<std::vector<std::string>>{{"disnix-env", "--rollback"}});
    CHECK(rollbackPlan(c, m, 1u, {}).invocation.steps ==
          std::vector<std::vector<std::string>>{{"disnix-env", "--switch-to-generation", "1"}});
}

TEST_CASE("a deploy command that is not an upstream switch gets the environment but no options") {
    FakeManager m;
    m.options = {"--runlevel", "3"};
    m.environment = {"SUPERVISORD_CONF_DIR=/etc/supervisor"};
    Config c = configFor(ManagerKind::SysVinit, "/nix/var/nix/profiles/web");
    c.deploy.command = {"/usr/local/bin/my-deploy", "--fast"};
    auto s = switchInvocation(c, m, "/m.nix", {{"NIXPROC_STATE_DIR", "/y"}});
    CHECK(s.argv == std::vector<std::string>{"/usr/local/bin/my-deploy", "--fast"});
    CHECK(s.profile_options == std::vector<std::string>{"-p", "web", "--runlevel", "3"});
    CHECK(s.profile_environment.empty());
    CHECK(envValue(s, "NIXPROC_STATE_DIR") == "/y"); // its business, untouched
    CHECK(envValue(s, "SUPERVISORD_CONF_DIR") == "/etc/supervisor");
    CHECK(isUpstreamSwitch("/nix/store/abc-nixproc-tools/bin/nixproc-s6-rc-switch"));
    CHECK_FALSE(isUpstreamSwitch("nixproc--switch"));
    CHECK_FALSE(isUpstreamSwitch("nixproc-supervisord-deploy"));
}
