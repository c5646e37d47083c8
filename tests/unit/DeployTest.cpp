#include "deploy/Model.hpp"
#include "deploy/ProfileDiff.hpp"
#include "deploy/StateStore.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
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

TEST_CASE("the model's fingerprint covers every .nix file under its folder and the extra files, nothing else", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{ a = 1; }"), {"ids.nix", "ports.json"}};
    auto first = m.fingerprint();
    REQUIRE(first);
    f.write("README", "x");
    f.write(".processes.nix.swp", "vim swap");
    f.write("processes.nix~", "backup");
    f.write(".#processes.nix", "emacs lock");
    CHECK(m.fingerprint() == first);
    f.write("ids.nix", "{ ids = {}; }");
    auto with_ids = m.fingerprint();
    CHECK(with_ids != first);
    f.write("ports.json", "{}");
    auto with_extra = m.fingerprint();
    CHECK(with_extra != with_ids);
    f.write("modules/webapp.nix", "{ }");
    auto with_module = m.fingerprint();
    CHECK(with_module != with_extra);
    f.write("processes.nix", "{ a = 2; }");
    CHECK(m.fingerprint() != with_module);
    fs::remove(f.path / "processes.nix");
    CHECK_FALSE(m.fingerprint());
    CHECK(m.read().error.missing);
}

TEST_CASE("a model file that is a FIFO or leads to a device is an error, read without blocking", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{ }"), {"ids.nix"}};
    REQUIRE(::mkfifo((f.path / "ids.nix").c_str(), 0600) == 0);
    auto fifo = m.read(); // opening and reading a FIFO with no writer would block forever
    CHECK_FALSE(fifo.snapshot);
    CHECK(fifo.error.message == (f.path / "ids.nix").string() + " is a FIFO, not a regular file");
    fs::remove(f.path / "ids.nix");
    fs::remove(f.path / "processes.nix");
    fs::create_symlink("/dev/zero", f.path / "processes.nix"); // would never end
    auto zero = m.read();
    CHECK_FALSE(zero.snapshot);
    CHECK(zero.error.message == m.path + " is a character device, not a regular file");
}

TEST_CASE("a model writable by others or its group, or under such a folder, is not trusted", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{}"), {"ids.nix"}};
    auto insecurity = [&] { return m.read().snapshot->insecurity; };
    fs::permissions(m.path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    CHECK(insecurity().empty());
    fs::permissions(m.path, fs::perms::group_write, fs::perm_options::add);
    CHECK(insecurity() == "the model file " + m.path + " is writable by its group (mode 0660)");
    fs::permissions(m.path, fs::perms::group_write, fs::perm_options::remove);
    fs::permissions(f.path, fs::perms::others_write, fs::perm_options::add);
    CHECK_THAT(insecurity(), Catch::StartsWith("the folder " + f.path.string() + " is writable by others"));
    fs::permissions(f.path, fs::perms::others_write, fs::perm_options::remove);
    auto ids = f.write("ids.nix", "{}");
    REQUIRE(::chown(ids.c_str(), 65534, 65534) == 0);
    CHECK(insecurity() == "the model file " + ids + " is owned by uid 65534, not by root or uid 0 that runs the switch");
    fs::remove(ids);
    f.write("modules/db.nix", "{}");
    fs::permissions(f.path / "modules/db.nix", fs::perms::others_write, fs::perm_options::add);
    CHECK_THAT(insecurity(), Catch::Contains("modules/db.nix is writable by others"));
}

TEST_CASE("every folder above the model counts, and where a symlinked model leads", "[deploy]") {
    Folder f;
    // A world-writable parent lets anyone rename the model's folder away and put their own there.
    f.write("open/etc/nixproc/processes.nix", "{}");
    fs::permissions(f.path / "open", fs::perms::all);
    Model under_open{(f.path / "open/etc/nixproc/processes.nix").string(), {}};
    CHECK(under_open.read().snapshot->insecurity == "the folder " + (f.path / "open").string() + " is writable by others (mode 0777)");
    // Sticky and world-writable (like /tmp) is fine above a folder of root's: only root may rename it.
    fs::permissions(f.path / "open", fs::perms::all | fs::perms::sticky_bit);
    CHECK(under_open.read().snapshot->insecurity.empty());
    // A model that is a symlink into a folder anyone can write: the target can be swapped.
    f.write("drop/processes.nix", "{ evil = 1; }");
    fs::permissions(f.path / "drop", fs::perms::all);
    fs::create_directories(f.path / "etc");
    fs::create_symlink(f.path / "drop/processes.nix", f.path / "etc/processes.nix");
    Model linked{(f.path / "etc/processes.nix").string(), {}};
    CHECK(linked.read().snapshot->insecurity == "the folder " + (f.path / "drop").string() + " is writable by others (mode 0777)");
}

TEST_CASE("the snapshot is written to a private folder, replacing the previous copy", "[deploy]") {
    Folder f;
    Model m{f.write("processes.nix", "{ a = import ./modules/a.nix; }"), {"ids.nix"}};
    f.write("modules/a.nix", "1");
    f.write("ids.nix", "{ }");
    auto snapshot = m.read().snapshot;
    REQUIRE(snapshot);
    auto copy = (f.path / "state/model").string();
    fs::create_directories(copy);
    f.write("state/model/stale.nix", "from the previous deployment");
    CHECK(snapshot->writeTo(copy, "processes.nix") == copy + "/processes.nix");
    CHECK_FALSE(fs::exists(copy + "/stale.nix"));
    CHECK(fs::status(copy).permissions() == fs::perms::owner_all);
    std::ifstream in(copy + "/modules/a.nix");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(text == "1");
    // What is saved after the read is not in the copy.
    f.write("processes.nix", "{ changed = true; }");
    snapshot->writeTo(copy, "processes.nix");
    std::ifstream main(copy + "/processes.nix");
    std::string main_text((std::istreambuf_iterator<char>(main)), std::istreambuf_iterator<char>());
    CHECK(main_text == "{ a = import ./modules/a.nix; }");
}

TEST_CASE("a model file that is a link is copied under its own name, never where it leads", "[deploy]") {
    Folder f;
    // A Kubernetes ConfigMap: each file a link through ..data into a hidden timestamped folder.
    f.write("m/..2026_11_29/processes.nix", "{ ids = import ./ids.nix; }");
    f.write("m/..2026_11_29/ids.nix", "{ }");
    fs::create_directory_symlink("..2026_11_29", f.path / "m/..data");
    fs::create_symlink("..data/processes.nix", f.path / "m/processes.nix");
    fs::create_symlink("..data/ids.nix", f.path / "m/ids.nix");
    // A module shared from a folder beside the model's.
    f.write("shared/mod.nix", "{ shared = true; }");
    fs::create_symlink("../shared/mod.nix", f.path / "m/mod.nix");
    Model m{(f.path / "m/processes.nix").string(), {"ids.nix"}};
    auto snapshot = m.read().snapshot;
    REQUIRE(snapshot);
    std::vector<std::string> names;
    for (const auto& [name, content] : snapshot->files) names.push_back(name);
    CHECK(names == std::vector<std::string>{"ids.nix", "mod.nix", "processes.nix"});
    auto copy = (f.path / "state/model").string();
    fs::create_directories(f.path / "state");
    snapshot->writeTo(copy, "processes.nix");
    CHECK(fs::exists(copy + "/ids.nix"));
    CHECK(fs::exists(copy + "/mod.nix"));
    CHECK_FALSE(fs::exists(f.path / "state/shared")); // nothing beside the copy
    snapshot->writeTo(copy, "processes.nix"); // and the next deployment's copy works the same
    CHECK(fs::exists(copy + "/mod.nix"));
    // A link to a device is named by its own name.
    fs::create_symlink("/dev/zero", f.path / "m/z.nix");
    CHECK(m.read().error.message == (f.path / "m/z.nix").string() + " is a character device, not a regular file");
}

TEST_CASE("a sub-folder of the model that cannot be listed fails the read, never a part of the model", "[deploy]") {
    if (::geteuid() == 0) {
        // root lists any folder: drop to nobody for the read, in a child (the test stays root).
        Folder f;
        f.write("m/processes.nix", "{ }");
        f.write("m/locked/a.nix", "{ }");
        f.write("m/z/b.nix", "{ }");
        fs::permissions(f.path / "m/locked", fs::perms::none);
        for (const auto& p : {f.path, f.path / "m", f.path / "m/z"})
            fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                                   fs::perms::others_exec);
        int pipe_fds[2];
        REQUIRE(::pipe(pipe_fds) == 0);
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::close(pipe_fds[0]);
            if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
            Model m{(f.path / "m/processes.nix").string(), {}};
            auto r = m.read();
            std::string out = r.snapshot ? "read" : r.error.message;
            ssize_t ignored = ::write(pipe_fds[1], out.data(), out.size());
            (void)ignored;
            ::_exit(0);
        }
        ::close(pipe_fds[1]);
        std::string got;
        char buf[4096];
        for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
        ::close(pipe_fds[0]);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        fs::permissions(f.path / "m/locked", fs::perms::owner_all);
        CHECK_THAT(got, Catch::StartsWith("cannot list the model's folder " + (f.path / "m").string() + ": Permission denied"));
    } else {
        Folder f;
        f.write("m/processes.nix", "{ }");
        f.write("m/locked/a.nix", "{ }");
        fs::permissions(f.path / "m/locked", fs::perms::none);
        Model m{(f.path / "m/processes.nix").string(), {}};
        auto r = m.read();
        fs::permissions(f.path / "m/locked", fs::perms::owner_all);
        CHECK_FALSE(r.snapshot);
        CHECK_THAT(r.error.message, Catch::StartsWith("cannot list the model's folder"));
    }
}

TEST_CASE("a snapshot never writes a file outside its copy's folder", "[deploy]") {
    Folder f;
    ModelSnapshot evil;
    evil.files = {{"../escaped.nix", "{ }"}};
    fs::create_directories(f.path / "state");
    CHECK_THROWS_WITH(evil.writeTo((f.path / "state/model").string(), "processes.nix"),
                      Catch::Contains("not a name inside the model's copy"));
    CHECK_FALSE(fs::exists(f.path / "state/escaped.nix"));
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
    s.deployments.push_back({.number = 1, .trigger = Trigger::Boot, .fingerprint = "00ff", .started = StateStore::now(),
                             .ended = StateStore::now(), .outcome = Outcome::Succeeded, .exit_code = 0, .plan = "+webapp",
                             .generation = 4});
    s.deployments.push_back({.number = 2, .trigger = Trigger::Watch, .outcome = Outcome::Running});
    store.save(s);
    auto back = store.load();
    CHECK(back.bootstrapped);
    CHECK(back.deployed_fingerprint == "00ff");
    REQUIRE(back.deployments.size() == 2);
    CHECK(back.deployments[0].plan == "+webapp");
    CHECK(back.deployments[0].exit_code == 0);
    CHECK(back.deployments[0].trigger == Trigger::Boot);
    CHECK(back.deployments[0].outcome == Outcome::Succeeded);
    CHECK(back.deployments[0].generation == 4u);
    CHECK(back.deployments[1].trigger == Trigger::Watch);
    CHECK(back.deployments[1].outcome == Outcome::Running);
    CHECK_FALSE(back.deployments[1].exit_code);
    CHECK_FALSE(back.deployments[1].generation);
    CHECK(back.nextNumber() == 3);
    CHECK_FALSE(fs::exists(store.file() + ".tmp"));

    for (unsigned n = 3; n < 80; ++n) s.deployments.push_back({.number = n, .outcome = Outcome::Succeeded}); // not add(): save trims too
    store.save(s);
    CHECK(store.load().deployments.size() == 50);
    CHECK(store.load().nextNumber() == 80);

    f.write("state/state.yaml", "deployments: [ {number: 1, outcome: exploded} ]");
    CHECK_THROWS_WITH(store.load(), Catch::Contains("deployment 1: unknown outcome 'exploded'"));
    f.write("state/state.yaml", "deployments: [ {number: }");
    CHECK_THROWS_WITH(store.load(), Catch::StartsWith("state file " + store.file() + ": cannot be read"));
}

TEST_CASE("the deployment history in memory keeps only what the state file keeps", "[deploy]") {
    DeployState s;
    for (unsigned n = 1; n <= 1000; ++n) s.add({.number = n, .outcome = Outcome::Succeeded});
    CHECK(s.deployments.size() == kKeptDeployments);
    CHECK(s.deployments.front().number == 1000 - kKeptDeployments + 1);
    CHECK(s.nextNumber() == 1001);
}

TEST_CASE("a trailing running or interrupted deployment is unfinished", "[deploy]") {
    DeployState s;
    CHECK_FALSE(s.lastUnfinished());
    s.add({.number = 1, .outcome = Outcome::Succeeded});
    CHECK_FALSE(s.lastUnfinished());
    s.add({.number = 2, .outcome = Outcome::Running});
    CHECK(s.lastUnfinished());
    s.deployments.back().outcome = Outcome::Interrupted;
    CHECK(s.lastUnfinished());
    s.deployments.back().outcome = Outcome::Failed;
    CHECK_FALSE(s.lastUnfinished());
}

TEST_CASE("the state folder is created 0700 whatever the umask, and locked", "[deploy]") {
    Folder f;
    mode_t old = ::umask(0);
    StateStore store((f.path / "var/state").string());
    std::string why;
    auto access = store.open(why);
    ::umask(old);
    CHECK(access == StateAccess::Ready);
    CHECK(why.empty());
    CHECK(fs::status(f.path / "var/state").permissions() == fs::perms::owner_all);
    StateStore second((f.path / "var/state").string());
    CHECK(second.open(why) == StateAccess::HeldByAnother); // flock: another open file description
    CHECK_THAT(why, Catch::EndsWith("/var/state/lock: held by another nixproc-init"));
}

TEST_CASE("a state folder that others can write is refused", "[deploy]") {
    Folder f;
    fs::create_directories(f.path / "state");
    fs::permissions(f.path / "state", fs::perms::all);
    StateStore store((f.path / "state").string());
    std::string why;
    CHECK(store.open(why) == StateAccess::Unusable);
    CHECK_THAT(why, Catch::StartsWith("the folder " + (f.path / "state").string() + " is writable by others (mode 0777)"));
}

TEST_CASE("the state file's temporary is never written through a planted link", "[deploy]") {
    Folder f;
    StateStore store((f.path / "state").string());
    std::string why;
    REQUIRE(store.open(why) == StateAccess::Ready);
    f.write("victim", "precious");
    fs::create_symlink(f.path / "victim", f.path / "state/state.yaml.tmp");
    store.save({});
    std::ifstream victim(f.path / "victim");
    std::string text((std::istreambuf_iterator<char>(victim)), std::istreambuf_iterator<char>());
    CHECK(text == "precious");
    CHECK(store.load().deployments.empty());
    CHECK_FALSE(fs::exists(f.path / "state/state.yaml.tmp"));
}

TEST_CASE("an unwritable state folder is an error naming the file", "[deploy]") {
    Folder f;
    f.write("blocker", "a file where the folder should be");
    StateStore store((f.path / "blocker" / "state").string());
    CHECK_THROWS_WITH(store.save({}), Catch::Contains("blocker/state") && Catch::Contains("create folder"));
    std::string why;
    CHECK(store.open(why) == StateAccess::Unusable);
    CHECK_THAT(why, Catch::Contains("blocker/state: create folder: Not a directory"));
}
