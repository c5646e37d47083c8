#include "deploy/Model.hpp"
#include "deploy/ProfileDiff.hpp"
#include "deploy/StateStore.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {

struct Folder {
    fs::path path = fs::temp_directory_path() / ("nixproc-deploy-unit-" + std::to_string(::getpid()));
    Folder() {
        fs::remove_all(path);
        fs::create_directories(path);
        fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    }
    ~Folder() { fs::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        fs::create_directories((path / name).parent_path());
        std::ofstream(path / name) << text;
        return (path / name).string();
    }
};

} // namespace

TEST_CASE("the model's fingerprint covers the extra files and nothing else", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{ a = 1; }"), {"ids.nix"}};
    auto first = m.fingerprint();
    REQUIRE(first);
    f.write("unrelated.nix", "x");
    CHECK(m.fingerprint() == first);
    f.write("ids.nix", "{ ids = {}; }");
    auto with_ids = m.fingerprint();
    CHECK(with_ids != first);
    f.write("processes.nix", "{ a = 2; }");
    CHECK(m.fingerprint() != with_ids);
    fs::remove(f.path / "processes.nix");
    CHECK_FALSE(m.fingerprint());
}

TEST_CASE("a model writable by others or its group is not trusted", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{}"), {"ids.nix"}};
    fs::permissions(m.path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    CHECK(m.insecurity().empty());
    fs::permissions(m.path, fs::perms::group_write, fs::perm_options::add);
    CHECK(m.insecurity() == "the model file " + m.path + " is writable by its group (mode 0660)");
    fs::permissions(m.path, fs::perms::group_write, fs::perm_options::remove);
    fs::permissions(f.path, fs::perms::others_write, fs::perm_options::add);
    CHECK_THAT(m.insecurity(), Catch::StartsWith("the model's folder " + f.path.string() + " is writable by others"));
    fs::permissions(f.path, fs::perms::others_write, fs::perm_options::remove);
    auto ids = f.write("ids.nix", "{}");
    REQUIRE(::chown(ids.c_str(), 65534, 65534) == 0);
    CHECK(m.insecurity() == "the model file " + ids + " is owned by uid 65534, not by uid 0 that runs the switch");
}

TEST_CASE("profile diff per process instance, in each backend's layout", "[deploy]") {
    Folder f;
    // Two generations as Nix makes them: entries are links into the store.
    f.write("store/a-webapp.conf", "webapp v1");
    f.write("store/b-nginx.conf", "nginx v1");
    f.write("store/c-nginx.conf", "nginx v2");
    f.write("store/d-old.conf", "old");
    f.write("store/e-webapp2.conf", "webapp2");
    auto link = [&](const std::string& gen, const std::string& name, const std::string& target) {
        fs::create_directories(f.path / gen / "conf.d");
        fs::create_symlink(f.path / "store" / target, f.path / gen / "conf.d" / name);
    };
    link("gen1", "webapp.conf", "a-webapp.conf");
    link("gen1", "nginx.conf", "b-nginx.conf");
    link("gen1", "old.conf", "d-old.conf");
    link("gen2", "webapp.conf", "a-webapp.conf");
    link("gen2", "nginx.conf", "c-nginx.conf");
    link("gen2", "webapp2.conf", "e-webapp2.conf");
    f.write("gen2/conf.d/README", "not an instance");
    ProfileLayout supervisord{"conf.d", "", ".conf"};
    auto d = diffProfiles(readProfile((f.path / "gen1").string(), supervisord), readProfile((f.path / "gen2").string(), supervisord));
    CHECK(d.describe() == "+webapp2 -old ~nginx =webapp");
    CHECK(diffProfiles({}, {}).describe() == "no process instances");

    f.write("rc/etc/rc.d/rc3.d/S10webapp", "#!/bin/sh");
    f.write("rc/etc/rc.d/rc3.d/K90webapp", "#!/bin/sh");
    auto rc = readProfile((f.path / "rc").string(), ProfileLayout{"etc/rc.d/rc3.d", "S", ""});
    CHECK(rc.size() == 1);
    CHECK(rc.contains("webapp"));
}

TEST_CASE("the state file round-trips, keeps the last 50 deployments, leaves no temporary file", "[deploy]") {
    Folder f;
    StateStore store((f.path / "state").string());
    CHECK(store.load().deployments.empty()); // first boot: no file
    DeployState s;
    s.bootstrapped = true;
    s.deployed_fingerprint = "00ff";
    s.deployments.push_back({.number = 1, .trigger = "boot", .fingerprint = "00ff", .started = StateStore::now(),
                             .ended = StateStore::now(), .outcome = "succeeded", .exit_code = 0, .plan = "+webapp"});
    s.deployments.push_back({.number = 2, .trigger = "watch", .outcome = "running"});
    store.save(s);
    auto back = store.load();
    CHECK(back.bootstrapped);
    CHECK(back.deployed_fingerprint == "00ff");
    REQUIRE(back.deployments.size() == 2);
    CHECK(back.deployments[0].plan == "+webapp");
    CHECK(back.deployments[0].exit_code == 0);
    CHECK_FALSE(back.deployments[1].exit_code);
    CHECK(back.nextNumber() == 3);
    CHECK_FALSE(fs::exists(store.file() + ".tmp"));

    for (unsigned n = 3; n < 80; ++n) s.deployments.push_back({.number = n, .outcome = "succeeded"});
    store.save(s);
    CHECK(store.load().deployments.size() == 50);
    CHECK(store.load().nextNumber() == 80);

    f.write("state/state.yaml", "deployments: [ {number: }");
    CHECK_THROWS_WITH(store.load(), Catch::StartsWith("state file " + store.file() + ": cannot be read"));
}

TEST_CASE("an unwritable state folder is an error naming the file", "[deploy]") {
    Folder f;
    f.write("blocker", "a file where the folder should be");
    StateStore store((f.path / "blocker" / "state").string());
    CHECK_THROWS_WITH(store.save({}), Catch::Contains("blocker/state") && Catch::Contains("create folder"));
}
