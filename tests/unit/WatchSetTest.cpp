// The model watcher's watch set and settling, without inotify: a fake OS adapter gives watch ids
// by folder (the same id for the same folder, as inotify does) and the tests feed the events
// inotify would send.
#include "deploy/ModelWatcher.hpp"
#include "Scratch.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sys/stat.h>

using namespace nixproc;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Kind = watch::Event::Kind;

namespace {

struct FakeFolders : watch::Folders {
    std::map<std::pair<dev_t, ino_t>, int> by_inode;
    std::map<int, std::string> live; // id → the path it was added with
    std::vector<int> removed;
    int next = 1;
    std::map<std::string, int> refuse; // path → the errno inotify_add_watch gives for it (EACCES)
    std::size_t max_watches = SIZE_MAX; // beyond it a new watch fails with ENOSPC, as inotify's limit

    int add(const std::string& path, Role role) override {
        if (auto it = refuse.find(path); it != refuse.end()) return -it->second;
        struct stat st {};
        // A sub-folder is never followed: a symlink is not a folder then (IN_DONT_FOLLOW|IN_ONLYDIR).
        int rc = role == Role::Sub ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st);
        if (rc != 0) return -errno;
        if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
        if (!by_inode.contains({st.st_dev, st.st_ino}) && live.size() >= max_watches) return -ENOSPC;
        auto [it, added] = by_inode.try_emplace({st.st_dev, st.st_ino}, next);
        if (added) ++next;
        live[it->second] = path;
        return it->second;
    }
    void remove(int id) override {
        removed.push_back(id);
        live.erase(id);
        for (auto it = by_inode.begin(); it != by_inode.end();)
            it = it->second == id ? by_inode.erase(it) : std::next(it);
    }
};

struct Tree {
    Scratch s;
    std::string folder = s.dir + "/etc/nixproc";
    FakeFolders os;
    std::vector<std::string> warnings;
    std::unique_ptr<watch::WatchSet> set;

    Tree() { put("processes.nix", "{ }"); }
    void put(const std::string& relative, const std::string& text = "{ }") const {
        fs::path file = folder + "/" + relative;
        fs::create_directories(file.parent_path());
        std::ofstream(file) << text;
    }
    void mkdir(const std::string& relative) const { fs::create_directories(folder + "/" + relative); }
    void start() {
        set = std::make_unique<watch::WatchSet>(os, Model{folder + "/processes.nix", {"ids.json"}},
                                                [this](const std::string& w) { warnings.push_back(w); });
        set->start();
    }
    std::string event(Kind kind, const std::string& in, const std::string& name = "") {
        int id = set->idOf(in);
        REQUIRE(id >= 0);
        return set->handle({kind, id, name});
    }
    std::vector<std::string> watched() const { return set->watched(); }
    // What the OS watches is what the set says it watches.
    void consistent() const {
        std::vector<std::string> paths;
        for (const auto& [id, path] : os.live)
            if (id != set->parentId()) paths.push_back(path == folder ? "" : path.substr(folder.size() + 1));
        std::sort(paths.begin(), paths.end());
        CHECK(paths == watched());
    }
};

std::string deep(int levels) { // d1/d2/.../dN
    std::string path;
    for (int i = 1; i <= levels; ++i) path += (i > 1 ? "/d" : "d") + std::to_string(i);
    return path;
}

using Paths = std::vector<std::string>;

} // namespace

TEST_CASE("every sub-folder of the model's folder is watched, not hidden ones nor folder links", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.put("services/web/nginx.nix");
    t.put("modules/empty/.keep");
    t.put(".git/objects/ab.nix");
    t.put("#backup#/x.nix");
    t.put("old~/x.nix");
    fs::create_directory_symlink(t.folder + "/services", t.folder + "/linked");
    fs::create_directory_symlink("/", t.folder + "/services/root");
    t.start();
    CHECK(t.watched() == Paths{"", "modules", "modules/empty", "services", "services/web"});
    CHECK(t.set->parentId() >= 0);
    CHECK(t.os.live.at(t.set->parentId()) == t.s.dir + "/etc");
    CHECK(t.warnings.empty());
    t.consistent();
}

TEST_CASE("saves of model files count at every level, editor files and other files do not", "[watch]") {
    Tree t;
    t.put("services/web/nginx.nix");
    t.start();
    CHECK(t.event(Kind::Entry, "", "processes.nix") == "processes.nix");
    CHECK(t.event(Kind::Entry, "", "ids.json") == "ids.json"); // watch.extra, at the top only
    CHECK(t.event(Kind::Entry, "", "..data") == "..data");     // a ConfigMap update
    CHECK(t.event(Kind::Entry, "services", "web.nix") == "services/web.nix");
    CHECK(t.event(Kind::Entry, "services/web", "nginx.nix") == "services/web/nginx.nix");
    for (std::string name : {".web.nix.swp", ".web.nix.swx", "web.nix~", ".#web.nix", "#web.nix#", "4913", "ids.json", "..data",
                             "README.md", "cooledit.nix"}) {
        INFO(name);
        CHECK(t.event(Kind::Entry, "services", name).empty());
    }
    // Hidden folders coming and going are not the model's.
    CHECK(t.event(Kind::FolderIn, "services", ".git").empty());
    CHECK(t.event(Kind::FolderOut, "services", ".git").empty());
    CHECK(t.watched() == Paths{"", "services", "services/web"});
}

TEST_CASE("a folder created or moved in later is watched with what is below it, and counts only with a model file", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.start();
    t.mkdir("services/empty");
    CHECK(t.event(Kind::FolderIn, "services", "empty").empty());
    // Saved into before its watch was added: the listing finds it.
    t.put("services/db/replicas/db.nix");
    CHECK(t.event(Kind::FolderIn, "services", "db") == "services/db/");
    CHECK(t.watched() == Paths{"", "services", "services/db", "services/db/replicas", "services/empty"});
    // The event of the sub-folder's creation, read later, finds it watched: the watch stays.
    int replicas = t.set->idOf("services/db/replicas");
    CHECK(t.event(Kind::FolderIn, "services/db", "replicas") == "services/db/replicas/");
    CHECK(t.set->idOf("services/db/replicas") == replicas);
    CHECK(t.event(Kind::Entry, "services/db/replicas", "db.nix") == "services/db/replicas/db.nix");
    CHECK(t.watched() == Paths{"", "services", "services/db", "services/db/replicas", "services/empty"});
    t.consistent();
}

TEST_CASE("a folder removed or moved away is no longer watched, and counts as a change", "[watch]") {
    Tree t;
    t.put("services/db/replicas/db.nix");
    t.put("services/web.nix");
    t.start();
    int db = t.set->idOf("services/db"), replicas = t.set->idOf("services/db/replicas");
    fs::rename(t.folder + "/services/db", t.s.dir + "/db");
    CHECK(t.event(Kind::FolderOut, "services", "db") == "services/db/");
    CHECK(t.watched() == Paths{"", "services"});
    // Moved away, the watches would follow it: they are removed.
    CHECK_THAT(t.os.removed, Catch::UnorderedEquals(std::vector<int>{db, replicas}));
    // Their last events (the move, then the removal of the watch) change nothing.
    CHECK(t.set->handle({Kind::Gone, db, ""}).empty());
    CHECK(t.set->handle({Kind::Dropped, db, ""}).empty());
    t.consistent();

    // Removed: the kernel says so on the folder itself, and on its parent.
    int web_folder_gone = t.set->idOf("services");
    fs::remove_all(t.folder + "/services");
    CHECK(t.set->handle({Kind::Gone, web_folder_gone, ""}) == "services/");
    CHECK(t.set->handle({Kind::FolderOut, t.set->idOf(""), "services"}) == "services/");
    CHECK(t.set->handle({Kind::Dropped, web_folder_gone, ""}).empty());
    CHECK(t.watched() == Paths{""});
    t.consistent();
}

TEST_CASE("a sub-folder renamed is watched under its new name only, and the rename counts", "[watch]") {
    Tree t;
    t.put("services/web/nginx.nix");
    t.start();
    int old_id = t.set->idOf("services");
    fs::rename(t.folder + "/services", t.folder + "/modules");
    // inotify's order: from, to (on the parent), then the folder's own move.
    CHECK(t.event(Kind::FolderOut, "", "services") == "services/");
    CHECK(t.event(Kind::FolderIn, "", "modules") == "modules/");
    CHECK(t.set->handle({Kind::Gone, old_id, ""}).empty());
    CHECK(t.watched() == Paths{"", "modules", "modules/web"});
    CHECK(t.set->idOf("modules") != old_id);
    CHECK(t.event(Kind::Entry, "modules/web", "nginx.nix") == "modules/web/nginx.nix");
    t.consistent();
}

TEST_CASE("a folder moved in over one of the same name replaces what was watched there", "[watch]") {
    Tree t;
    t.put("services/old/a.nix");
    t.start();
    int old_id = t.set->idOf("services");
    Scratch outside;
    fs::create_directories(outside.dir + "/services/new");
    std::ofstream(outside.dir + "/services/new/b.nix") << "{ }";
    fs::remove_all(t.folder + "/services");
    fs::rename(outside.dir + "/services", t.folder + "/services");
    CHECK(t.event(Kind::FolderIn, "", "services") == "services/");
    CHECK(t.watched() == Paths{"", "services", "services/new"});
    CHECK(t.set->idOf("services") != old_id);
    t.consistent();
}

TEST_CASE("a folder deeper than the bound is not watched, and one warning names it", "[watch]") {
    Tree t;
    std::string deepest = deep(kMaxModelDepth - 1), too_deep = deep(kMaxModelDepth);
    t.put(deepest + "/ok.nix");
    t.put(too_deep + "/no.nix");
    t.put(too_deep + "/d9/no.nix");
    t.start();
    CHECK(t.watched().size() == static_cast<std::size_t>(kMaxModelDepth)); // "" and d1 ... d7
    CHECK(t.watched().back() == deepest);
    REQUIRE(t.warnings.size() == 1);
    CHECK_THAT(t.warnings[0], Catch::StartsWith(t.folder + "/" + too_deep + ": not watched, more than " +
                                                std::to_string(kMaxModelDepth - 1) + " folders below " + t.folder));
    // Coming again (created anew, or crawled again after an overflow): no second warning.
    CHECK(t.event(Kind::FolderIn, deepest, "d" + std::to_string(kMaxModelDepth)).empty());
    CHECK(t.set->handle({Kind::Overflow, -1, ""}) == t.folder);
    CHECK(t.warnings.size() == 2); // the overflow's own
    CHECK_THAT(t.warnings[1], Catch::Contains("overflow"));
    CHECK(t.watched().size() == static_cast<std::size_t>(kMaxModelDepth));
    // Another folder too deep is named too.
    t.mkdir(deepest + "/other");
    CHECK(t.event(Kind::FolderIn, deepest, "other").empty());
    REQUIRE(t.warnings.size() == 3);
    CHECK_THAT(t.warnings[2], Catch::StartsWith(t.folder + "/" + deepest + "/other: not watched"));
    t.consistent();
}

TEST_CASE("more folders than the bound: what fits is watched, and one warning names the first left out", "[watch]") {
    Tree t;
    for (std::size_t i = 0; i < kMaxModelFiles + 10; ++i) t.mkdir("many/" + std::to_string(100000 + i));
    t.start();
    CHECK(t.watched().size() == kMaxModelFiles);
    CHECK(t.os.live.size() == kMaxModelFiles + 1); // and the parent
    REQUIRE(t.warnings.size() == 1);
    // Breadth first, by name: "", many, and the first 998 of its sub-folders.
    std::string first_out = t.folder + "/many/" + std::to_string(100000 + kMaxModelFiles - 2);
    CHECK_THAT(t.warnings[0], Catch::StartsWith(first_out + ": not watched, " + t.folder + " has more than 1000 folders"));
    // A folder created later does not fit either; said once.
    t.mkdir("late");
    CHECK(t.event(Kind::FolderIn, "", "late").empty());
    CHECK(t.set->idOf("late") == -1);
    CHECK(t.warnings.size() == 1);
    // Room again (a folder removed): a new folder is watched.
    fs::remove(t.folder + "/many/100000");
    CHECK(t.event(Kind::FolderOut, "many", "100000") == "many/100000/");
    CHECK(t.event(Kind::FolderIn, "", "late").empty());
    CHECK(t.set->idOf("late") >= 0);
    t.consistent();
}

TEST_CASE("at inotify's watch limit one warning per crawl or batch of events counts the folders left out and names the first", "[watch]") {
    Tree t;
    for (int i = 1; i <= 100; ++i) t.put("d" + std::to_string(i) + "/m.nix");
    t.put("locked/m.nix");
    t.os.refuse[t.folder + "/locked"] = EACCES;
    t.os.max_watches = 20; // the parent, the model's folder and 18 sub-folders
    t.start();
    // By name: d1, d10, d100, d11 ... d19, d2, d20 ... d24.
    CHECK(t.watched().size() == 19);
    CHECK(t.watched().back() == "d24");
    // Another error keeps its own line, one per folder.
    REQUIRE(t.warnings.size() == 2);
    CHECK(t.warnings[0] == "cannot watch " + t.folder + "/locked: Permission denied");
    CHECK_THAT(t.warnings[1], Catch::StartsWith("cannot watch 82 folders of the model in " + t.folder + " (the first: " + t.folder +
                                                "/d25): No space left on device") &&
                                  Catch::Contains("sysctl fs.inotify.max_user_watches"));
    t.consistent();

    // Folders created later that do not fit either: counted, and said once for the batch of events.
    for (int i = 101; i <= 150; ++i) {
        t.mkdir("d" + std::to_string(i));
        CHECK(t.event(Kind::FolderIn, "", "d" + std::to_string(i)).empty());
    }
    CHECK(t.warnings.size() == 2);
    t.set->endBatch();
    REQUIRE(t.warnings.size() == 3);
    CHECK_THAT(t.warnings[2], Catch::StartsWith("cannot watch 50 folders of the model in " + t.folder + " (the first: " + t.folder +
                                                "/d101): No space left on device"));
    t.set->endBatch(); // nothing new: nothing said
    CHECK(t.warnings.size() == 3);

    // A crawl (after an overflow) says it again, with what it found; the refused folder is not named again.
    CHECK(t.set->handle({Kind::Overflow, -1, ""}) == t.folder);
    CHECK(t.event(Kind::FolderIn, "", "locked").empty());
    t.set->endBatch();
    REQUIRE(t.warnings.size() == 5);
    CHECK_THAT(t.warnings[3], Catch::Contains("overflow"));
    // By name again, the new folders among the old ones: d1, d10, d100, then d101 is the first that does not fit.
    CHECK_THAT(t.warnings[4], Catch::StartsWith("cannot watch 132 folders of the model in " + t.folder + " (the first: " + t.folder +
                                                "/d101)"));
    CHECK(t.watched().size() == 19);
    t.consistent();
}

TEST_CASE("a sub-folder that could not be watched is watched and listed when its mode changes, a change if it holds model files", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.put("services/locked/db.nix");
    t.put("services/locked/deeper/x.nix");
    t.mkdir("services/empty");
    t.os.refuse[t.folder + "/services/locked"] = EACCES;
    t.os.refuse[t.folder + "/services/empty"] = EACCES;
    t.start();
    CHECK(t.watched() == Paths{"", "services"});
    CHECK(t.warnings.size() == 2);
    // chmod 755: the parent reports the sub-folder's new attributes.
    t.os.refuse.clear();
    CHECK(t.event(Kind::FolderAttrib, "services", "locked") == "services/locked/");
    CHECK(t.watched() == Paths{"", "services", "services/locked", "services/locked/deeper"});
    CHECK(t.event(Kind::Entry, "services/locked/deeper", "x.nix") == "services/locked/deeper/x.nix");
    // Readable but empty: watched, and nothing of the model changed.
    CHECK(t.event(Kind::FolderAttrib, "services", "empty").empty());
    CHECK(t.set->idOf("services/empty") >= 0);
    // chmod of folders watched already, with nothing new below them: no change, and the watches stay.
    int locked = t.set->idOf("services/locked");
    CHECK(t.event(Kind::FolderAttrib, "services", "locked").empty());
    CHECK(t.event(Kind::FolderAttrib, "", "services").empty());
    CHECK(t.set->idOf("services/locked") == locked);
    CHECK(t.os.removed.empty());
    // Hidden folders are not the model's, whatever their mode.
    t.mkdir("services/.git");
    CHECK(t.event(Kind::FolderAttrib, "services", ".git").empty());
    CHECK(t.set->idOf("services/.git") == -1);

    // A folder watched, whose sub-folder could not be (it could not be searched): its chmod tries
    // what is below it again.
    t.put("services/db/replica/r.nix");
    t.os.refuse[t.folder + "/services/db/replica"] = EACCES;
    CHECK(t.event(Kind::FolderIn, "services", "db").empty());
    CHECK(t.set->idOf("services/db") >= 0);
    CHECK(t.set->idOf("services/db/replica") == -1);
    t.os.refuse.clear();
    CHECK(t.event(Kind::FolderAttrib, "services", "db") == "services/db/");
    CHECK(t.set->idOf("services/db/replica") >= 0);
    // Each refused folder was named once.
    CHECK(t.warnings.size() == 3);
    t.consistent();
}

TEST_CASE("the model's folder that could not be watched is watched when its mode changes", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.os.refuse[t.folder] = EACCES;
    t.start();
    CHECK(t.watched().empty());
    REQUIRE(t.warnings.size() == 1);
    CHECK(t.warnings[0] == "cannot watch " + t.folder + ": Permission denied");
    t.os.refuse.clear();
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "nixproc"}) == t.folder);
    CHECK(t.watched() == Paths{"", "services"});
    // Watched already: a chmod changes nothing of the model.
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "nixproc"}).empty());
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "other"}).empty());
    CHECK(t.watched() == Paths{"", "services"});
    CHECK(t.os.removed.empty());
    t.consistent();
}

TEST_CASE("an overflow counts as a change and crawls again: folders missed are watched, gone ones dropped", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.put("old/a.nix");
    t.start();
    int services = t.set->idOf("services"), old_id = t.set->idOf("old");
    // While events were lost: one folder came, one went, one was renamed.
    t.put("services/db/db.nix");
    fs::remove_all(t.folder + "/old");
    fs::rename(t.folder + "/services", t.folder + "/svc");
    CHECK(t.set->handle({Kind::Overflow, -1, ""}) == t.folder);
    CHECK(t.watched() == Paths{"", "svc", "svc/db"});
    CHECK(t.set->idOf("svc") == services); // still the same folder: its watch was kept
    CHECK(std::find(t.os.removed.begin(), t.os.removed.end(), old_id) != t.os.removed.end());
    t.consistent();
}

TEST_CASE("the model's folder removed, then created again: nothing is watched, then all of it", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.start();
    int root = t.set->idOf("");
    fs::remove_all(t.folder);
    CHECK(t.set->handle({Kind::Gone, root, ""}) == t.folder);
    CHECK(t.set->handle({Kind::FolderOut, t.set->parentId(), "nixproc"}) == t.folder);
    CHECK(t.watched().empty());
    t.put("services/db/db.nix");
    CHECK(t.set->handle({Kind::FolderIn, t.set->parentId(), "nixproc"}) == t.folder);
    CHECK(t.watched() == Paths{"", "services", "services/db"});
    CHECK(t.set->handle({Kind::Dropped, root, ""}).empty()); // the old folder's last event
    CHECK(t.set->handle({Kind::FolderIn, t.set->parentId(), "other"}).empty());
    t.consistent();
}

TEST_CASE("restarts within the quiet period give one call after it, and none once destroyed", "[watch]") {
    boost::asio::io_context io;
    int calls = 0;
    auto quiet = std::make_unique<watch::QuietPeriod>(io, 50ms, [&] { ++calls; });
    CHECK_FALSE(quiet->settling());
    quiet->restart();
    quiet->restart();
    CHECK(quiet->settling());
    io.run_for(10s); // returns once the timer has run: nothing else is queued
    CHECK(calls == 1);
    CHECK_FALSE(quiet->settling());

    io.restart();
    quiet->restart();
    quiet.reset();
    io.run_for(10s);
    CHECK(calls == 1);
}

TEST_CASE("a quiet period's end already queued when it restarts does not call early", "[watch]") {
    boost::asio::io_context io;
    int calls = 0;
    watch::QuietPeriod quiet(io, 20ms, [&] { ++calls; });
    quiet.restart();
    // The loop is busy past the period's end; then a save restarts it. The loop looks at the
    // timer between the two handlers, so the old period's completion is queued (successful)
    // behind the restart: it must not call.
    boost::asio::post(io, [&] {
        auto busy_until = std::chrono::steady_clock::now() + 60ms;
        while (std::chrono::steady_clock::now() < busy_until) {} // the workload, not a wait
        boost::asio::post(io, [&] { quiet.restart(); });
    });
    io.run_for(10s); // returns once every timer has run
    CHECK(calls == 1);
    CHECK_FALSE(quiet.settling());
}
