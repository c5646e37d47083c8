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
#include <set>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

    std::set<std::string> mounts;              // paths that are mount points
    std::map<std::string, Identity> unlinked;  // path → what it leads to: a file removed, kept by a mount

    int add(const std::string& path, Role role) override {
        if (auto it = refuse.find(path); it != refuse.end()) return -it->second;
        struct stat st {};
        // A sub-folder is never followed: a symlink is not a folder then (IN_DONT_FOLLOW|IN_ONLYDIR).
        int rc = role == Role::Sub ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st);
        if (rc != 0) return -errno;
        if (auto it = unlinked.find(path); it != unlinked.end()) st.st_dev = it->second.dev, st.st_ino = it->second.ino;
        if (role != Role::File && !S_ISDIR(st.st_mode)) return -ENOTDIR;
        if (!by_inode.contains({st.st_dev, st.st_ino}) && live.size() >= max_watches) return -ENOSPC;
        auto [it, added] = by_inode.try_emplace({st.st_dev, st.st_ino}, next);
        if (added) ++next;
        live[it->second] = path;
        return it->second;
    }
    std::optional<Identity> identify(const std::string& path) override {
        if (auto it = unlinked.find(path); it != unlinked.end()) return it->second;
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) return std::nullopt;
        return Identity{st.st_dev, st.st_ino, st.st_nlink, mounts.contains(path)};
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
        std::vector<std::string> files;
        for (const auto& [id, path] : os.live) {
            if (id == set->parentId()) continue;
            std::string relative = path == folder ? "" : path.substr(folder.size() + 1);
            bool file = fs::is_regular_file(path) || os.unlinked.contains(path);
            (file ? files : paths).push_back(relative);
        }
        std::sort(paths.begin(), paths.end());
        std::sort(files.begin(), files.end());
        CHECK(paths == watched());
        CHECK(files == set->watchedFiles());
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
    CHECK(t.watched().size() == static_cast<std::size_t>(kMaxModelDepth)); // "" and d1 ... d8
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
    CHECK(t.os.live.size() == kMaxModelFiles + 2); // and the parent, and processes.nix itself
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
    // Watched already: a chmod still counts (the trust check covers the folder: a deployment refused
    // for its mode is tried again), and the watches stay.
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "nixproc"}) == t.folder);
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

TEST_CASE("files eight folders deep are part of the model, as the README says, and the warning names the ninth", "[watch]") {
    Tree t;
    t.put(deep(8) + "/ok.nix");
    t.put(deep(9) + "/no.nix");
    t.start();
    CHECK(t.watched().back() == deep(8));
    REQUIRE(t.warnings.size() == 1);
    CHECK_THAT(t.warnings[0], Catch::StartsWith(t.folder + "/" + deep(9) + ": not watched, more than 8 folders below " + t.folder));
    auto read = Model{t.folder + "/processes.nix", {}}.read();
    REQUIRE(read.snapshot);
    CHECK(read.snapshot->files.size() == 2); // processes.nix and d1/.../d8/ok.nix
}

TEST_CASE("the model file and the extra files there are watched themselves, and their own events count", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.start();
    CHECK(t.set->watchedFiles() == Paths{"processes.nix"}); // ids.json is not there
    CHECK(t.warnings.empty());
    t.consistent();
    // Written in place where only the file's own watch sees it (a single-file bind mount).
    CHECK(t.set->handle({Kind::Self, t.set->fileIdOf("processes.nix"), ""}) == "processes.nix");
    // An extra file created later is watched once its folder says it came.
    t.put("ids.json", "{}");
    CHECK(t.event(Kind::Entry, "", "ids.json") == "ids.json");
    CHECK(t.set->watchedFiles() == Paths{"ids.json", "processes.nix"});
    CHECK(t.set->handle({Kind::Self, t.set->fileIdOf("ids.json"), ""}) == "ids.json");
    // Replaced in its folder (sed -i): the old file's link count dropped; the new one is watched.
    int old_id = t.set->fileIdOf("processes.nix");
    t.put("sedXyZ", "{ new = 1; }");
    fs::rename(t.folder + "/sedXyZ", t.folder + "/processes.nix");
    CHECK(t.set->handle({Kind::Self, old_id, ""}) == "processes.nix");
    CHECK(t.set->fileIdOf("processes.nix") != old_id);
    CHECK(t.set->fileIdOf("processes.nix") >= 0);
    CHECK(std::find(t.os.removed.begin(), t.os.removed.end(), old_id) != t.os.removed.end());
    CHECK(t.set->handle({Kind::Dropped, old_id, ""}).empty()); // its last event
    // Removed: no longer watched, and the removal counts.
    int ids = t.set->fileIdOf("ids.json");
    fs::remove(t.folder + "/ids.json");
    CHECK(t.set->handle({Kind::Gone, ids, ""}) == "ids.json");
    CHECK(t.set->fileIdOf("ids.json") == -1);
    CHECK(t.warnings.empty());
    t.consistent();
}

TEST_CASE("a model file that is a mount point is named at start in one warning", "[watch]") {
    Tree t;
    t.put("ids.json", "{}");
    t.os.mounts.insert(t.folder + "/processes.nix");
    t.start();
    CHECK(t.set->watchedFiles() == Paths{"ids.json", "processes.nix"});
    REQUIRE(t.warnings.size() == 1);
    CHECK_THAT(t.warnings[0], Catch::StartsWith(t.folder + "/processes.nix is a single-file bind mount") &&
                                  Catch::Contains("sed -i") && Catch::Contains("bind-mount the folder"));
    // Crawled again (an overflow): not said again.
    CHECK(t.set->handle({Kind::Overflow, -1, ""}) == t.folder);
    CHECK(t.warnings.size() == 2);
    t.consistent();
}

TEST_CASE("a mounted model file replaced on the host gives one warning, and what is written to the old file still counts", "[watch]") {
    Tree t;
    t.os.mounts.insert(t.folder + "/processes.nix");
    t.start();
    REQUIRE(t.warnings.size() == 1);
    int id = t.set->fileIdOf("processes.nix");
    // The path still leads to the file watched, now with no link: the mount keeps it.
    auto was = t.os.identify(t.folder + "/processes.nix");
    REQUIRE(was);
    t.os.unlinked[t.folder + "/processes.nix"] = {was->dev, was->ino, 0, true};
    // Its link count dropped: the fingerprint says it is unchanged (what the init sees is).
    CHECK(t.set->handle({Kind::Self, id, ""}) == "processes.nix");
    REQUIRE(t.warnings.size() == 2);
    CHECK_THAT(t.warnings[1], Catch::StartsWith(t.folder + "/processes.nix was replaced or removed on the host") &&
                                  Catch::Contains("still sees the old file") && Catch::Contains("restart"));
    // Written to from inside afterwards: a change, and no second warning.
    CHECK(t.set->handle({Kind::Self, id, ""}) == "processes.nix");
    CHECK(t.set->handle({Kind::Gone, id, ""}).empty());
    CHECK(t.warnings.size() == 2);
    CHECK(t.set->fileIdOf("processes.nix") == id);
    // Moved away on the host (the link count stays): the same, once.
    Tree u;
    u.os.mounts.insert(u.folder + "/processes.nix");
    u.start();
    CHECK(u.set->handle({Kind::Gone, u.set->fileIdOf("processes.nix"), ""}).empty());
    REQUIRE(u.warnings.size() == 2);
    CHECK_THAT(u.warnings[1], Catch::StartsWith(u.folder + "/processes.nix was replaced or removed on the host"));
}

TEST_CASE("a mounted model folder moved away on the host gives one warning and stays watched", "[watch]") {
    Tree t;
    t.os.mounts.insert(t.folder);
    t.start();
    CHECK(t.warnings.empty());
    int root = t.set->idOf("");
    CHECK(t.set->handle({Kind::Gone, root, ""}).empty());
    REQUIRE(t.warnings.size() == 1);
    CHECK_THAT(t.warnings[0], Catch::StartsWith("the folder " + t.folder + " was moved or removed on the host") &&
                                  Catch::Contains("restart"));
    CHECK(t.set->idOf("") == root);
    CHECK(t.event(Kind::Entry, "", "processes.nix") == "processes.nix"); // saves in it, from here, still count
    CHECK(t.set->handle({Kind::Gone, root, ""}).empty());
    CHECK(t.warnings.size() == 1);
    t.consistent();
}

TEST_CASE("a change of the mode or owner of the model's folder or of its parent counts, not of a sub-folder itself", "[watch]") {
    Tree t;
    t.put("services/web.nix");
    t.start();
    CHECK(t.set->handle({Kind::Self, t.set->idOf(""), ""}) == t.folder);
    CHECK(t.set->handle({Kind::Self, t.set->parentId(), ""}) == t.folder);
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "nixproc"}) == t.folder);
    CHECK(t.set->handle({Kind::FolderAttrib, t.set->parentId(), "other"}).empty());
    CHECK(t.set->handle({Kind::Self, t.set->idOf("services"), ""}).empty());
    CHECK(t.os.removed.empty());
    t.consistent();
}

TEST_CASE("what changed is named: sorted, the first three and how many more", "[watch]") {
    CHECK(watch::describeChanges({}) == "the model");
    CHECK(watch::describeChanges({"processes.nix"}) == "processes.nix");
    CHECK(watch::describeChanges({"processes.nix", "ids.nix"}) == "ids.nix, processes.nix");
    CHECK(watch::describeChanges({"e.nix", "d.nix", "c.nix", "b.nix", "a.nix"}) == "a.nix, b.nix, c.nix and 2 more");
    CHECK(watch::describeChanges({"services/db/", "/etc/nixproc"}) == "/etc/nixproc, services/db/");
    std::vector<std::string> many;
    for (std::size_t i = 0; i < ModelWatcher::kMaxChangesKept; ++i) many.push_back("f" + std::to_string(100 + i) + ".nix");
    CHECK(watch::describeChanges(many) == "f100.nix, f101.nix, f102.nix and " + std::to_string(many.size() - 3) + " or more");
}

TEST_CASE("a model whose folder was removed while still reachable says so, and that a restart is needed", "[watch]") {
    Scratch s;
    std::string folder = s.dir + "/gone";
    fs::create_directories(folder);
    // Reachable through a descriptor after its removal, as through a bind mount of it.
    int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    fs::remove(folder);
    auto read = Model{"/proc/self/fd/" + std::to_string(fd) + "/processes.nix", {}}.read();
    ::close(fd);
    REQUIRE_FALSE(read.snapshot);
    CHECK(read.error.missing);
    CHECK_THAT(read.error.message, Catch::Contains("processes.nix does not exist: the folder /proc/self/fd/") &&
                                       Catch::Contains("itself was removed") && Catch::Contains("restart"));
    // A folder that is there, without the file: as before.
    auto plain = Model{s.dir + "/processes.nix", {}}.read();
    CHECK(plain.error.message == s.dir + "/processes.nix does not exist");
}
