// The s6-rc manager against what nix-processmgmt deploys (tests/fixtures/upstream/s6-rc): the plan
// by process from the profile's etc/s6/sv, the start and stop steps on the state folder's
// database, and what a previous run left in the runtime folder.
#include "deploy/ProfileDiff.hpp"
#include "manager/Backends.hpp"
#include "LogCapture.hpp"
#include "Scratch.hpp"

#include "process/Signals.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {

const std::string kFixtureProfile = SOURCE_DIR "/tests/fixtures/upstream/s6-rc/profile";

void writeFile(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::trunc) << text;
}

// A service definition folder with the given files, e.g. {{"type", "longrun\n"}, {"run", "..."}}.
void define(const std::string& sv, const std::string& name, const std::vector<std::pair<std::string, std::string>>& files) {
    for (const auto& [file, text] : files) writeFile(sv + "/" + name + "/" + file, text);
}

// The caller keeps it: a manager holds a reference to its configuration, as to the init's.
Config s6Config(const Scratch& s) {
    Config c;
    c.process_manager = ManagerKind::S6Rc;
    c.nixproc.state_dir = s.dir + "/var";
    c.nixproc.runtime_dir = s.dir + "/run";
    return c;
}

std::vector<std::string> keys(const ProfileSnapshot& snapshot) {
    std::vector<std::string> out;
    for (const auto& [name, id] : snapshot) out.push_back(name);
    return out;
}

std::vector<std::vector<std::string>> argvs(const std::vector<Step>& steps) {
    std::vector<std::vector<std::string>> out;
    for (const auto& s : steps) out.push_back(s.argv);
    return out;
}

} // namespace

TEST_CASE("s6-rc plan: NAME-srv and NAME-log are one process NAME, bundles are not processes, oneshots and plain longruns keep their names",
          "[s6][plan]") {
    Scratch s;
    Config c = s6Config(s);
    auto manager = makeS6Rc(c);
    auto snapshot = manager->inventory(kFixtureProfile);
    REQUIRE(snapshot);
    CHECK(keys(*snapshot) == std::vector<std::string>{"cron", "nginx", "setup", "webapp"});
    // A folded name is identified by both halves.
    CHECK_THAT(snapshot->at("webapp"), Catch::Contains("webapp-log=") && Catch::Contains("webapp-srv="));
    CHECK_THAT(snapshot->at("cron"), Catch::StartsWith("folder:"));

    // No profile yet (the first deployment): nothing before.
    auto none = manager->inventory(s.dir + "/no-profile");
    REQUIRE(none);
    CHECK(none->empty());
    CHECK(diffProfiles(*none, *snapshot).describe() == "+cron +nginx +setup +webapp");
}

TEST_CASE("s6-rc plan: a change to either half of a pipeline changes its process, and the other processes stay equal", "[s6][plan]") {
    Scratch s;
    Config c = s6Config(s);
    auto manager = makeS6Rc(c);
    fs::copy(kFixtureProfile, s.dir + "/gen1", fs::copy_options::recursive);
    fs::copy(kFixtureProfile, s.dir + "/gen2", fs::copy_options::recursive);
    writeFile(s.dir + "/gen2/etc/s6/sv/webapp-log/notification-fd", "4\n");
    fs::remove_all(s.dir + "/gen2/etc/s6/sv/cron");
    auto before = manager->inventory(s.dir + "/gen1");
    auto after = manager->inventory(s.dir + "/gen2");
    REQUIRE(before);
    REQUIRE(after);
    CHECK(diffProfiles(*before, *after).describe() == "-cron ~webapp =nginx =setup");

    // The bundle's contents changed with it: still no `default` in the plan.
    writeFile(s.dir + "/gen2/etc/s6/sv/default/contents", "webapp-srv\nnginx-srv\nsetup\n");
    after = manager->inventory(s.dir + "/gen2");
    CHECK(diffProfiles(*before, *after).describe() == "-cron ~webapp =nginx =setup");
}

TEST_CASE("s6-rc plan: the pipeline files name the process, the -srv and -log suffixes only when there are none", "[s6][plan]") {
    Scratch s;
    std::string sv = s.dir + "/profile/etc/s6/sv";
    // A pipeline of three, named by its last consumer, whatever the services are called.
    define(sv, "reader", {{"type", "longrun\n"}, {"run", "r"}, {"producer-for", "filter\n"}});
    define(sv, "filter", {{"type", "longrun\n"}, {"run", "f"}, {"producer-for", "writer\n"}, {"consumer-for", "reader\n"}});
    define(sv, "writer", {{"type", "longrun\n"}, {"run", "w"}, {"consumer-for", "filter\n"}, {"pipeline-name", "etl\n"}});
    // Upstream's names without the pipeline files: still one process.
    define(sv, "api-srv", {{"type", "longrun\n"}, {"run", "a"}});
    define(sv, "api-log", {{"type", "longrun\n"}, {"run", "l"}});
    // A -log whose -srv is not there, a -srv producing for a logger of another name, a pipeline
    // without pipeline-name: their own names.
    define(sv, "orphan-log", {{"type", "longrun\n"}, {"run", "o"}});
    define(sv, "db-srv", {{"type", "longrun\n"}, {"run", "d"}, {"producer-for", "journal\n"}});
    define(sv, "journal", {{"type", "longrun\n"}, {"run", "j"}, {"consumer-for", "db-srv\n"}});
    // Bundles, however they list their contents.
    define(sv, "everything", {{"type", "bundle\n"}, {"contents", "# all of it\n  etl\napi-srv\n"}});
    define(sv, "empty", {{"type", "bundle\n"}, {"contents", ""}});
    Config c = s6Config(s);
    auto snapshot = makeS6Rc(c)->inventory(s.dir + "/profile");
    REQUIRE(snapshot);
    CHECK(keys(*snapshot) == std::vector<std::string>{"api", "db-srv", "etl", "journal", "orphan-log"});
    CHECK_THAT(snapshot->at("etl"), Catch::StartsWith("filter=folder:") && Catch::Contains("\nreader=folder:") &&
                                        Catch::Contains("\nwriter=folder:"));
}

TEST_CASE("s6-rc plan: entries linked into the store, as buildEnv makes them, are identified by where they lead", "[s6][plan]") {
    Scratch s;
    std::string store = s.dir + "/store";
    define(store + "/aaa-web-srv", "etc/s6/sv/web-srv", {{"type", "longrun\n"}, {"run", "v1"}, {"producer-for", "web-log\n"}});
    define(store + "/bbb-web-srv", "etc/s6/sv/web-srv", {{"type", "longrun\n"}, {"run", "v2"}, {"producer-for", "web-log\n"}});
    define(store + "/ccc-web-log", "etc/s6/sv/web-log",
           {{"type", "longrun\n"}, {"run", "log"}, {"consumer-for", "web-srv\n"}, {"pipeline-name", "web\n"}});
    for (auto [gen, srv] : {std::pair{"gen1", "aaa"}, std::pair{"gen2", "bbb"}}) {
        fs::create_directories(s.dir + "/" + gen + "/etc/s6/sv");
        fs::create_directory_symlink(store + "/" + srv + "-web-srv/etc/s6/sv/web-srv", s.dir + "/" + gen + "/etc/s6/sv/web-srv");
        fs::create_directory_symlink(store + "/ccc-web-log/etc/s6/sv/web-log", s.dir + "/" + gen + "/etc/s6/sv/web-log");
    }
    Config c = s6Config(s);
    auto manager = makeS6Rc(c);
    auto gen1 = manager->inventory(s.dir + "/gen1"), gen2 = manager->inventory(s.dir + "/gen2");
    REQUIRE(gen1);
    REQUIRE(gen2);
    CHECK(gen1->at("web") == "web-log=" + store + "/ccc-web-log/etc/s6/sv/web-log\nweb-srv=" + store + "/aaa-web-srv/etc/s6/sv/web-srv\n");
    CHECK(diffProfiles(*gen1, *gen2).describe() == "~web");
    CHECK(diffProfiles(*gen1, *manager->inventory(s.dir + "/gen1")).describe() == "=web");
}

TEST_CASE("s6-rc start steps: s6-rc-init on the database deployed last, resolved, else the boot database, else nothing", "[s6]") {
    Scratch s;
    Config c = s6Config(s);
    std::string rc = c.nixproc.state_dir + "/etc/s6/rc", live = s.dir + "/run/s6-rc", scan = s.dir + "/run/service";
    std::string boot = s.dir + "/boot/compiled";
    auto manager = makeS6Rc(c, boot);
    std::vector<std::string> up{"s6-rc", "-l", live, "-u", "change", "default"};

    CHECK(manager->startSteps().empty()); // the first switch runs s6-rc-init itself

    fs::create_directories(boot);
    CHECK(argvs(manager->startSteps()) == std::vector<std::vector<std::string>>{{"s6-rc-init", "-c", boot, "-l", live, scan}, up});

    // What the switch leaves: compiled-HASH, and `compiled` pointing at it (deploy.in:318-337).
    fs::create_directories(rc + "/compiled-0123456789abcdefghijklmnopqrstuv");
    fs::create_directory_symlink(rc + "/compiled-0123456789abcdefghijklmnopqrstuv", rc + "/compiled");
    CHECK(argvs(manager->startSteps()) ==
          std::vector<std::vector<std::string>>{{"s6-rc-init", "-c", rc + "/compiled-0123456789abcdefghijklmnopqrstuv", "-l", live, scan}, up});

    // A relative link resolves as readlink -f does.
    fs::remove(rc + "/compiled");
    fs::create_directory_symlink("compiled-0123456789abcdefghijklmnopqrstuv", rc + "/compiled");
    CHECK(manager->startSteps().front().argv.at(2) == rc + "/compiled-0123456789abcdefghijklmnopqrstuv");

    // A link to a database that is gone: the boot database.
    fs::remove(rc + "/compiled");
    fs::create_directory_symlink(rc + "/compiled-gone", rc + "/compiled");
    CHECK(manager->startSteps().front().argv.at(2) == boot);

    CHECK(manager->stopSteps().empty()); // no live state: nothing to take down
    fs::create_directories(s.dir + "/run/s6-rc:s6-rc-init:abcdef");
    fs::create_directory_symlink("s6-rc:s6-rc-init:abcdef", live);
    CHECK(argvs(manager->stopSteps()) == std::vector<std::vector<std::string>>{{"s6-rc", "-l", live, "-bDa", "change"}});
    // A live state still there at start (an s6-svscan already ran on the scan folder): kept, no s6-rc-init.
    CHECK(argvs(manager->startSteps()) == std::vector<std::vector<std::string>>{up});
}

TEST_CASE("s6-rc exports no environment to its switch: no upstream tool reads S6_RC_LIVE_DIR or S6_SCAN_DIR", "[s6]") {
    Scratch s;
    Config c = s6Config(s);
    auto manager = makeS6Rc(c);
    CHECK(manager->deployEnvironment().empty());
    CHECK(manager->command() == std::vector<std::string>{"s6-svscan", s.dir + "/run/service"});
}

TEST_CASE("s6-rc: what a previous run left in the runtime folder is cleared, and nothing else", "[s6]") {
    Scratch s;
    std::string run = s.dir + "/run", scan = run + "/service", live = run + "/s6-rc";
    auto make = [&] { // again in a section: what is still there stays
        std::error_code exists;
        fs::create_directories(scan + "/.s6-svscan");
        fs::create_directories(run + "/s6-rc:s6-rc-update:Kgyneu/servicedirs/web-srv/supervise");
        ::mkfifo((run + "/s6-rc:s6-rc-update:Kgyneu/servicedirs/web-srv/supervise/control").c_str(), 0600);
        fs::create_directories(run + "/s6-rc:s6-rc-init:HthBlS/servicedirs"); // a failed s6-rc-init's leftover
        fs::create_directory_symlink("s6-rc:s6-rc-update:Kgyneu", live, exists);
        for (auto n : {"web-srv", "web-log", "gone"}) fs::create_directory_symlink(live + "/servicedirs/" + n, scan + "/" + n, exists);
        // Not s6-rc's: a service of the image's own, a link elsewhere, another runtime folder.
        fs::create_directories(scan + "/logger");
        fs::create_directories(s.dir + "/elsewhere/cron");
        fs::create_directory_symlink(s.dir + "/elsewhere/cron", scan + "/cron", exists);
        fs::create_directories(run + "/s6-rc-other");
    };
    make();
    auto cleared = clearPreviousS6RcRun(scan, live);
    CHECK(cleared.errors.empty());
    CHECK(cleared.removed.size() == 6);
    for (auto n : {"web-srv", "web-log", "gone"}) CHECK_FALSE(fs::exists(fs::symlink_status(scan + "/" + n)));
    CHECK_FALSE(fs::exists(fs::symlink_status(live)));
    CHECK_FALSE(fs::exists(run + "/s6-rc:s6-rc-update:Kgyneu"));
    CHECK_FALSE(fs::exists(run + "/s6-rc:s6-rc-init:HthBlS"));
    for (auto kept : {scan + "/.s6-svscan", scan + "/logger", scan + "/cron", run + "/s6-rc-other", s.dir + "/elsewhere/cron"})
        CHECK(fs::exists(kept));

    SECTION("the live folder named through a linked parent, as /var/run/s6-rc for /run/s6-rc") {
        fs::create_directory_symlink(run, s.dir + "/var-run");
        make();
        REQUIRE(fs::read_symlink(scan + "/web-srv").string() == live + "/servicedirs/web-srv");
        CHECK(clearPreviousS6RcRun(scan, s.dir + "/var-run/s6-rc").removed.size() == 6);
        CHECK_FALSE(fs::exists(fs::symlink_status(scan + "/web-srv")));
        CHECK(fs::exists(scan + "/cron"));
    }
    SECTION("an s6-svscan reading the scan folder's control FIFO: its live state is current, nothing is touched") {
        make();
        REQUIRE(::mkfifo((scan + "/.s6-svscan/control").c_str(), 0600) == 0);
        int reader = ::open((scan + "/.s6-svscan/control").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        REQUIRE(reader >= 0);
        CHECK(clearPreviousS6RcRun(scan, live).removed.empty());
        CHECK(fs::is_symlink(live));
        CHECK(fs::is_symlink(scan + "/web-srv"));
        ::close(reader);
        CHECK(clearPreviousS6RcRun(scan, live).removed.size() == 6); // the FIFO without a reader: s6-svscan is gone
    }
}

TEST_CASE("s6-rc: a live folder that is a real folder is not s6-rc's state, it and the links into it stay, and a warning says so",
          "[s6]") {
    Scratch s;
    LogCapture log;
    std::string run = s.dir + "/run", scan = run + "/service", live = run + "/s6-rc";
    fs::create_directories(scan + "/.s6-svscan");
    // s6-rc-init only ever makes LIVE a symlink (atomic_symlink, s6-rc-init.c:116): this is someone's folder.
    writeFile(live + "/servicedirs/mine/run", "#!/bin/sh\n");
    writeFile(live + "/notes.txt", "mine\n");
    fs::create_directory_symlink(live + "/servicedirs/mine", scan + "/mine");
    // A leftover named exactly as s6-rc-init names its live folders is still cleared.
    fs::create_directories(run + "/s6-rc:s6-rc-init:HthBlS/servicedirs");

    auto cleared = clearPreviousS6RcRun(scan, live);
    CHECK(cleared.errors.empty());
    CHECK(cleared.removed == std::vector<std::string>{run + "/s6-rc:s6-rc-init:HthBlS"});
    CHECK(fs::is_directory(fs::symlink_status(live)));
    CHECK(fs::exists(live + "/notes.txt"));
    CHECK(fs::exists(live + "/servicedirs/mine/run"));
    CHECK(fs::is_symlink(scan + "/mine"));
    CHECK_THAT(log.warnings(), Catch::Contains(live + " is a folder, not the symlink s6-rc-init makes"));
}

TEST_CASE("s6-rc: only the names s6-rc-init and s6-rc-update give their live folders and links are cleared beside the live link",
          "[s6]") {
    Scratch s;
    std::string run = s.dir + "/run", scan = run + "/service", live = run + "/s6-rc";
    fs::create_directories(scan);
    // LIVE:PROG:XXXXXX (s6rc_livedir_create.c:22-26; PROG s6-rc-init.c:39, s6-rc-update.c:568), mkdtemp's
    // six characters; the temporary links of atomic_symlink (s6-rc-init.c:116, s6-rc-update.c:378).
    std::vector<std::string> theirs{"s6-rc:s6-rc-init:HthBlS", "s6-rc:s6-rc-update:Kg-_9z"};
    for (const auto& n : theirs) fs::create_directories(run + "/" + n + "/servicedirs");
    for (auto n : {"s6-rc:s6-rc-update_atomic_symlink:AbCdEf", "s6-rc:skalibs-atomic_symlink4:AbCdEf"}) {
        fs::create_directory_symlink("s6-rc:s6-rc-update:Kg-_9z", run + "/" + n);
        theirs.push_back(n);
    }
    fs::create_directory_symlink("s6-rc:s6-rc-update:Kg-_9z", live);
    // Not theirs: other names that start the same way, and a folder where only a link is made.
    std::vector<std::string> others{"s6-rc:s6-rc-mydata", "s6-rc:s6-rc-init:abc", "s6-rc:s6-rc-init:HthBlS.old",
                                    "s6-rc:s6-rc-initial:HthBlS", "s6-rc:s6-rc-update:Kg.9zz", "s6-rc:s6-rc-init:",
                                    "s6-rc:skalibs-atomic_symlink4:AbCdEf0"};
    for (const auto& n : others) writeFile(run + "/" + n + "/data", "mine\n");
    writeFile(run + "/s6-rc:s6-rc-update_atomic_symlink:Folder/data", "mine\n");
    others.push_back("s6-rc:s6-rc-update_atomic_symlink:Folder");

    auto cleared = clearPreviousS6RcRun(scan, live);
    CHECK(cleared.errors.empty());
    CHECK(cleared.removed.size() == 5);
    CHECK_FALSE(fs::exists(fs::symlink_status(live)));
    for (const auto& n : theirs) CHECK_FALSE(fs::exists(fs::symlink_status(run + "/" + n)));
    for (const auto& n : others) CHECK(fs::exists(run + "/" + n + "/data"));
}

TEST_CASE("s6-rc: a scan folder link is the live state's only when its normalised target is in the live folder", "[s6]") {
    Scratch s;
    std::string run = s.dir + "/run", scan = run + "/service", live = run + "/s6-rc";
    fs::create_directories(scan);
    fs::create_directories(run + "/s6-rc:s6-rc-init:HthBlS/servicedirs");
    fs::create_directory_symlink("s6-rc:s6-rc-init:HthBlS", live);
    fs::create_directories(s.dir + "/decoy/mysvc");
    fs::create_directories(run + "/s6-rc:s6-rc-mydata/svc");
    // Through the live folder's name, but leading out of it: the user's.
    fs::create_directory_symlink(live + "/../../decoy/mysvc", scan + "/dotdot");
    fs::create_directory_symlink(live + "/servicedirs/../../../decoy/mysvc", scan + "/deeper");
    fs::create_directory_symlink(live + ":s6-rc-init:HthBlS/../../decoy/mysvc", scan + "/sibling-dotdot");
    fs::create_directory_symlink(run + "/s6-rc:s6-rc-mydata/svc", scan + "/mydata");
    // Into the live folder however it is spelt: s6-rc's.
    fs::create_directory_symlink(run + "/./s6-rc//servicedirs/web", scan + "/web");
    fs::create_directory_symlink(run + "/service/../s6-rc/servicedirs/api", scan + "/api");
    fs::create_directory_symlink(live + ":s6-rc-init:HthBlS/servicedirs/old", scan + "/old");

    SECTION("named as configured") {
        auto cleared = clearPreviousS6RcRun(scan, live);
        CHECK(cleared.errors.empty());
        CHECK(cleared.removed.size() == 5); // web, api, old, the live link and its folder
    }
    SECTION("named through a linked parent, as /var/run/s6-rc for /run/s6-rc") {
        fs::create_directory_symlink(run, s.dir + "/var-run");
        auto cleared = clearPreviousS6RcRun(scan, s.dir + "/var-run/s6-rc");
        CHECK(cleared.errors.empty());
        CHECK(cleared.removed.size() == 5);
    }
    for (auto n : {"web", "api", "old"}) CHECK_FALSE(fs::exists(fs::symlink_status(scan + "/" + n)));
    for (auto n : {"dotdot", "deeper", "sibling-dotdot", "mydata"}) CHECK(fs::is_symlink(scan + "/" + n));
    CHECK(fs::exists(s.dir + "/decoy/mysvc"));
    CHECK(fs::exists(run + "/s6-rc:s6-rc-mydata/svc"));
}

TEST_CASE("s6-rc: a control file that is no FIFO is no s6-svscan, for the readiness probe and for the clean-up", "[s6]") {
    Scratch s;
    std::string run = s.dir + "/run", scan = run + "/service", live = run + "/s6-rc", control = scan + "/.s6-svscan/control";
    fs::create_directories(scan + "/.s6-svscan");
    fs::create_directories(run + "/s6-rc:s6-rc-init:HthBlS/servicedirs");
    fs::create_directory_symlink("s6-rc:s6-rc-init:HthBlS", live);
    fs::create_directory_symlink(live + "/servicedirs/web", scan + "/web");
    ReadinessProbe probe{ReadinessProbe::Kind::FifoReader, control};

    SECTION("a regular file") {
        writeFile(control, "");
        CHECK_FALSE(probe.ready());
    }
    SECTION("a link to /dev/null") {
        fs::create_symlink("/dev/null", control);
        CHECK_FALSE(probe.ready());
    }
    SECTION("a link to a FIFO with a reader is one") {
        REQUIRE(::mkfifo((s.dir + "/fifo").c_str(), 0600) == 0);
        int reader = ::open((s.dir + "/fifo").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        REQUIRE(reader >= 0);
        fs::create_symlink(s.dir + "/fifo", control);
        CHECK(probe.ready());
        CHECK(clearPreviousS6RcRun(scan, live).removed.empty());
        ::close(reader);
        CHECK_FALSE(probe.ready());
    }
    auto cleared = clearPreviousS6RcRun(scan, live);
    CHECK(cleared.errors.empty());
    CHECK(cleared.removed.size() == 3);
    CHECK_FALSE(fs::exists(fs::symlink_status(scan + "/web")));
    CHECK_FALSE(fs::exists(fs::symlink_status(live)));
    CHECK(fs::exists(fs::symlink_status(control))); // s6-svscan's own, it says what is wrong with it
}

namespace {

// PATH with the s6-rc stand-ins and s6-svscan, for check(); put back after the test.
struct StandinPath {
    std::string saved = std::getenv("PATH") ? std::getenv("PATH") : "";
    StandinPath() { ::setenv("PATH", (SOURCE_DIR "/tests/standins:/usr/sbin:/usr/bin:/sbin:/bin"), 1); }
    ~StandinPath() { ::setenv("PATH", saved.c_str(), 1); }
    StandinPath(const StandinPath&) = delete;
    StandinPath& operator=(const StandinPath&) = delete;
};

// The message and exit code of the ManagerError that check() throws, or {"", 0}.
std::pair<std::string, int> checkFailure(const ProcessManager& manager) {
    try {
        manager.check();
    } catch (const ManagerError& e) {
        return {e.what(), e.exit_code};
    }
    return {"", 0};
}

} // namespace

TEST_CASE("s6-rc refuses a scan folder or runtime folder that someone else can change, naming it and why, exit 2", "[s6]") {
    Scratch s;
    StandinPath path;
    Config c = s6Config(s);
    std::string run = s.dir + "/run", scan = run + "/service";
    auto manager = makeS6Rc(c, s.dir + "/no-boot-database");

    SECTION("made by the init where nothing was, 0755 whatever the umask") {
        mode_t old = ::umask(0);
        auto [why, code] = checkFailure(*manager);
        ::umask(old);
        CHECK(why == "");
        CHECK((fs::status(scan).permissions() & fs::perms::all) == (fs::perms::owner_all | fs::perms::group_read |
                                                                      fs::perms::group_exec | fs::perms::others_read |
                                                                      fs::perms::others_exec));
        CHECK((fs::status(run).permissions() & fs::perms::all) == (fs::status(scan).permissions() & fs::perms::all));
    }
    SECTION("a scan folder writable by others") {
        fs::create_directories(scan);
        fs::permissions(scan, fs::perms::all);
        writeFile(scan + "/planted/run", "#!/bin/sh\n");
        auto [why, code] = checkFailure(*manager);
        CHECK(code == 2);
        CHECK_THAT(why, Catch::Contains("s6-rc: scan folder " + scan + ": the folder " + scan +
                                        " is writable by others (mode 0777)"));
        CHECK(fs::exists(scan + "/planted/run")); // nothing is cleared either
    }
    SECTION("a runtime folder writable by its group") {
        fs::create_directories(scan);
        fs::permissions(run, fs::perms::group_write, std::filesystem::perm_options::add);
        auto [why, code] = checkFailure(*manager);
        CHECK(code == 2);
        CHECK_THAT(why, Catch::Contains("s6-rc: runtime folder " + run + ": the folder " + run + " is writable by its group"));
    }
    SECTION("a scan folder owned by another user") {
        if (::geteuid() != 0) {
            WARN("not root: cannot give the scan folder to another user");
            return;
        }
        fs::create_directories(scan);
        REQUIRE(::chown(scan.c_str(), 65534, 65534) == 0);
        auto [why, code] = checkFailure(*manager);
        CHECK(code == 2);
        CHECK_THAT(why, Catch::Contains("the folder " + scan + " is owned by uid 65534"));
    }
    SECTION("a runtime folder named through a link to a folder others can write") {
        fs::create_directories(s.dir + "/shared/service");
        fs::permissions(s.dir + "/shared", fs::perms::all);
        fs::create_directory_symlink(s.dir + "/shared", run);
        auto [why, code] = checkFailure(*manager);
        CHECK(code == 2);
        CHECK_THAT(why, Catch::Contains("s6-rc: runtime folder " + run + ": the folder " + s.dir + "/shared is writable by others"));
    }
}

// s6-svscan (2.10 and later, src/supervision/s6-svscan.c main: the selfpipe_trapset set; 2.11.3.2
// is Debian 12's) catches CHLD, ALRM, ABRT, HUP, INT, TERM, QUIT, USR1, USR2, PWR and WINCH, and
// ignores PIPE; "Signals that are not in the above list are not caught by s6-svscan and will have
// the system's default effect" (doc/s6-svscan.html).
TEST_CASE("s6-svscan gets the signals it handles, and those that would kill or stop it are refused with why", "[s6][signals]") {
    Scratch s;
    Config c = s6Config(s);
    auto manager = makeS6Rc(c);
    for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGALRM, SIGABRT, SIGUSR1, SIGUSR2, SIGPWR, SIGWINCH, SIGPIPE, SIGCONT, SIGURG}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig).empty());
    }
    for (int sig : {SIGVTALRM, SIGPROF, SIGIO, SIGXCPU, SIGXFSZ, SIGSEGV, SIGSYS, SIGSTKFLT, SIGRTMIN}) {
        INFO(signalName(sig));
        CHECK(manager->withheld(sig) == "it has no handler for it and would die");
    }
    CHECK(manager->withheld(SIGTSTP) == "it has no handler for it and would stop");
    c.manager.command = {"sleep", "600"}; // not s6-svscan: its signals are its own business
    CHECK(makeS6Rc(c)->withheld(SIGVTALRM).empty());
}
