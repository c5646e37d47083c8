// The model watcher under the real init, with real inotify: every sub-folder of the model's folder
// is watched (upstream models import their constructors and modules, ./services/nginx.nix), within
// Model's bounds. The deploy command is a small recorder of the model's copy, not a switch stand-in,
// so that these tests depend on the watcher and the deploy numbers only.
#include "deploy/Model.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

struct Watched {
    TempDir t;
    std::string folder = t / "etc/nixproc";
    std::unique_ptr<Child> init;
    std::vector<std::string> outside; // runs `unshare --pid ...` (argv prefix): a user namespace
    std::vector<std::string> as;      // runs the init inside the PID namespace (argv prefix): setpriv
    std::pair<std::string, std::string> bind; // source bind-mounted over target in the init's mount namespace

    Watched() { put("processes.nix", "{ main = 1; }\n"); }

    // Saves `text` as the model's file `relative` (folders created), truncating it in place.
    void put(const std::string& relative, const std::string& text) const {
        fs::path file = folder + "/" + relative;
        fs::create_directories(file.parent_path());
        std::ofstream(file, std::ios::trunc) << text;
    }

    void start() {
        // One line per deployment: every .nix file of the model's copy, "PATH=CONTENT|", sorted.
        // The model's copy is $1 (older inits) or $NIXPROC_PROCESSES.
        auto recorder = t.write("record.sh", "model=${1:-$NIXPROC_PROCESSES}\n"
                                             "cd \"$(dirname \"$model\")\" || exit 1\n"
                                             "find . -name '*.nix' -type f | sort | while read -r f; do\n"
                                             "  printf '%s=%s|' \"${f#./}\" \"$(tr '\\n' ' ' < \"$f\")\"\n"
                                             "done >> " + t / "deployed" + "\n"
                                             "echo >> " + t / "deployed" + "\n");
        auto yaml = t.write("init.yaml", "process_manager: none\nprocesses: " + folder + "/processes.nix\nstate_dir: " + t / "state" +
                                             "\nwatch:\n  debounce_ms: 100\ndeploy:\n  command: [/bin/sh, " + recorder +
                                             "]\n  check: []\nbootstrap: {channel: \"\"}\n"
                                             // A main child that SIGSTOP and SIGCONT (forwarded) do not end.
                                             "manager:\n  command: [sleep, infinity]\nlog:\n  level: debug\n");
        std::vector<std::string> command = as;
        command.insert(command.end(), {initBinary(), "-c", yaml});
        std::vector<std::string> argv = outside;
        auto inside = bind.first.empty() ? inPidNamespace(command) : inPidNamespaceWithBind(bind.first, bind.second, command);
        for (auto& arg : inside) argv.push_back(std::move(arg));
        init = std::make_unique<Child>(argv);
    }

    std::vector<std::string> records() const {
        std::vector<std::string> lines;
        std::istringstream in(readFile(t / "deployed"));
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        return lines;
    }

    // Stops at once when deployment n fails, is refused, times out or is interrupted.
    bool done(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }

    // The watcher has read the event that saved `relative` (it reads them in order: every event
    // before it has been read too). Each name may serve once per test: the log is searched whole.
    bool saw(const std::string& relative) { return init->expectLog(relative + " saved: deploying after", 30s); }

    // A save of processes.nix after everything else: if it becomes deployment n, with its content,
    // nothing else was deployed between.
    void sentinel(int n) {
        std::string text = "{ sentinel = " + std::to_string(n) + "; }\n";
        put("processes.nix", text);
        REQUIRE(done(n));
        CHECK(records().size() == static_cast<std::size_t>(n));
        CHECK_THAT(records().back(), Catch::Contains("processes.nix={ sentinel = " + std::to_string(n) + "; }"));
    }

    // Runs `script` with /bin/sh in the init's mount namespace (where `bind` is mounted).
    void inside(const std::string& script) const {
        Child sh({"nsenter", "--target", std::to_string(namespaceInit(init->pid())), "--mount", "/bin/sh", "-c", script});
        REQUIRE(sh.wait(20s) == 0);
    }

    void stop() {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(init->wait(20s) == 128 + SIGTERM); // the main child's own status
    }
};

std::string deepFolder(int levels) { // d1/d2/.../dN
    std::string path;
    for (int i = 1; i <= levels; ++i) path += (i > 1 ? "/d" : "d") + std::to_string(i);
    return path;
}

} // namespace

TEST_CASE("editing an imported file in a sub-folder deploys once, two folders down too", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.put("services/web/nginx.nix", "{ workers = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    w.put("services/web.nix", "{ port = 2; }\n");
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), Catch::Contains("services/web.nix={ port = 2; }"));
    w.sentinel(3);
    // Saved as sed -i does: a temporary file renamed over it.
    w.put("services/web/sedXyZ123", "{ workers = 2; }\n");
    fs::rename(w.folder + "/services/web/sedXyZ123", w.folder + "/services/web/nginx.nix");
    REQUIRE(w.done(4));
    CHECK_THAT(w.records().back(), Catch::Contains("services/web/nginx.nix={ workers = 2; }"));
    w.sentinel(5);
    w.stop();
}

TEST_CASE("a sub-folder created after start, then a file saved into it, deploys, and so do later saves there", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    fs::create_directories(w.folder + "/services/db/replicas");
    w.put("services/db/replicas/db.nix", "{ replicas = 1; }\n");
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), Catch::Contains("services/db/replicas/db.nix={ replicas = 1; }"));
    // Its creation may have been read before the file was saved or after: this save can only be
    // seen through a watch on the new folder.
    w.put("services/db/replicas/db.nix", "{ replicas = 2; }\n");
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), Catch::Contains("services/db/replicas/db.nix={ replicas = 2; }"));
    w.sentinel(4);

    // A folder moved in from outside the model, with a model file in it and a sub-folder.
    TempDir outside;
    fs::create_directories(outside / "cache/conf");
    std::ofstream(outside / "cache/conf/cache.nix") << "{ size = 1; }\n";
    fs::rename(outside / "cache", w.folder + "/services/cache");
    REQUIRE(w.done(5));
    CHECK_THAT(w.records().back(), Catch::Contains("services/cache/conf/cache.nix={ size = 1; }"));
    w.put("services/cache/conf/cache.nix", "{ size = 2; }\n");
    REQUIRE(w.done(6));
    w.sentinel(7);
    w.stop();
}

TEST_CASE("editor temp files and hidden folders in a sub-folder are not changes", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    w.put("services/.web.nix.swp", "vim swap");
    w.put("services/web.nix~", "{ port = 0; }\n");
    w.put("services/.#web.nix", "emacs lock");
    w.put("services/.git/objects/ab/cd.nix", "{ }\n");
    w.put("services/.git/HEAD.nix", "{ }\n");
    // Events are read in order: once this save is seen, so were the ones above.
    w.put("services/barrier.nix", "{ }\n");
    REQUIRE(w.saw("services/barrier.nix"));
    auto log = w.init->stderrText();
    CHECK(count(log, " saved: deploying after") == count(log, "services/barrier.nix saved: deploying after"));
    CHECK_THAT(log, !Catch::Contains("swp saved") && !Catch::Contains("~ saved") && !Catch::Contains(".git"));
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), !Catch::Contains("swp") && !Catch::Contains(".git") && !Catch::Contains("web.nix~"));
    // A save inside the hidden folder after it was created is not seen either.
    w.put("services/.git/HEAD.nix", "{ changed = 1; }\n");
    w.put("services/barrier2.nix", "{ }\n");
    REQUIRE(w.saw("services/barrier2.nix"));
    CHECK_THAT(w.init->stderrText(), !Catch::Contains(".git"));
    REQUIRE(w.done(3));
    w.sentinel(4);
    w.stop();
}

TEST_CASE("removing a sub-folder deploys, and so do moving one away and renaming one", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.put("services/db/db.nix", "{ replicas = 1; }\n");
    w.put("services/cache/cache.nix", "{ size = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    fs::remove_all(w.folder + "/services/db");
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), !Catch::Contains("db.nix"));
    // Moved out of the model: the only event is on its parent (no file in it is touched).
    TempDir outside;
    fs::rename(w.folder + "/services/cache", outside / "cache");
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), !Catch::Contains("cache.nix"));
    // A whole sub-folder renamed: the model's files have new names.
    fs::rename(w.folder + "/services", w.folder + "/modules");
    REQUIRE(w.done(4));
    CHECK_THAT(w.records().back(), Catch::Contains("modules/web.nix={ port = 1; }") && !Catch::Contains("services/"));
    // ...and it is watched under its new name.
    w.put("modules/web.nix", "{ port = 2; }\n");
    REQUIRE(w.done(5));
    CHECK_THAT(w.records().back(), Catch::Contains("modules/web.nix={ port = 2; }"));
    w.sentinel(6);
    w.stop();
}

TEST_CASE("a folder deeper than the bound is not watched, and one warning names it", "[watch]") {
    using nixproc::kMaxModelDepth;
    Watched w;
    // The deepest folder whose files are part of the model, and the first one below it.
    std::string deepest = deepFolder(kMaxModelDepth - 1), too_deep = deepFolder(kMaxModelDepth);
    w.put(deepest + "/ok.nix", "{ ok = 1; }\n");
    w.put(too_deep + "/deep.nix", "{ deep = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    std::string warning = w.folder + "/" + too_deep + ": not watched";
    REQUIRE(w.init->expectLog(warning));
    CHECK_THAT(w.records().back(), Catch::Contains(deepest + "/ok.nix") && !Catch::Contains("deep.nix"));
    w.put(too_deep + "/deep.nix", "{ deep = 2; }\n");
    w.put(deepest + "/ok.nix", "{ ok = 2; }\n");
    REQUIRE(w.saw(deepest + "/ok.nix"));
    CHECK_THAT(w.init->stderrText(), !Catch::Contains("deep.nix saved"));
    REQUIRE(w.done(2));
    // Created again after start: still not watched, and not warned about a second time.
    fs::remove_all(w.folder + "/" + too_deep);
    w.put(too_deep + "/deep2.nix", "{ deep = 3; }\n");
    w.put(deepest + "/ok2.nix", "{ ok = 3; }\n");
    REQUIRE(w.saw(deepest + "/ok2.nix"));
    CHECK_THAT(w.init->stderrText(), !Catch::Contains("deep2.nix saved"));
    CHECK(count(w.init->stderrText(), warning) == 1);
    REQUIRE(w.done(3));
    w.sentinel(4);
    w.stop();
}

TEST_CASE("an inotify queue overflow re-crawls the sub-folders: one created while events were lost is watched", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    pid_t pid = namespaceInit(w.init->pid());
    // Frozen, the init reads no event: 17,000 new files overflow the queue (16,384 by default),
    // and the new folder's creation is lost with the rest.
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    for (int i = 0; i < 17'000; ++i) {
        int fd = ::open((w.folder + "/services/scratch-" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        ::close(fd);
    }
    w.put("services/db/db.nix", "{ replicas = 1; }\n");
    REQUIRE(::kill(pid, SIGCONT) == 0);
    REQUIRE(w.done(2));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("inotify queue overflow on " + w.folder));
    CHECK_THAT(w.records().back(), Catch::Contains("services/db/db.nix={ replicas = 1; }"));
    w.put("services/db/db.nix", "{ replicas = 2; }\n");
    REQUIRE(w.done(3));
    w.sentinel(4);
    w.stop();
}

TEST_CASE("at inotify's watch limit one line says how many folders are not watched, and one more for a batch of new ones", "[watch]") {
    Watched w;
    for (int i = 1; i <= 100; ++i) w.put("d" + std::to_string(i) + "/m.nix", "{ }\n");
    // The limit of a user namespace of its own (the host's fs.inotify.max_user_watches is left as
    // it is): the parent, the model's folder and 18 of its 100 sub-folders.
    auto limit = w.t.write("limit.sh", "echo 20 > /proc/sys/user/max_inotify_watches && exec \"$@\"\n");
    w.outside = {"unshare", "--user", "--map-root-user", "/bin/sh", limit};
    w.start();
    REQUIRE(w.done(1)); // the watcher is set up before the first deployment: its warnings are in the log
    auto warnings = [&] { return count(w.init->stderrText(), "cannot watch"); };
    CHECK(warnings() == 1);
    CHECK_THAT(w.init->stderrText(), Catch::Contains("cannot watch 82 folders of the model in " + w.folder + " (the first: " +
                                                     w.folder + "/d25): No space left on device") &&
                                         Catch::Contains("sysctl fs.inotify.max_user_watches"));
    // 50 folders created while the init is frozen: it reads their events at once, in one batch.
    pid_t pid = namespaceInit(w.init->pid());
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    for (int i = 101; i <= 150; ++i) fs::create_directory(w.folder + "/d" + std::to_string(i));
    REQUIRE(::kill(pid, SIGCONT) == 0);
    w.sentinel(2); // read after the 50 creations
    CHECK(warnings() == 2);
    CHECK_THAT(w.init->stderrText(), Catch::Contains("cannot watch 50 folders of the model in " + w.folder + " (the first: " +
                                                     w.folder + "/d101): No space left on device"));
    // What is watched still deploys.
    w.put("d1/m.nix", "{ d1 = 2; }\n");
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), Catch::Contains("d1/m.nix={ d1 = 2; }"));
    w.sentinel(4);
    w.stop();
}

TEST_CASE("a sub-folder that could not be read when it came is watched once it is made readable, and saves in it deploy", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    // Root reads every folder: the init runs as nobody. The model stays root's (trusted, and
    // readable by all); the state folder and the recorder's output are nobody's.
    w.as = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    REQUIRE(::chmod(w.t.path.c_str(), 0755) == 0);
    fs::create_directory(w.t / "state");
    std::ofstream(w.t / "deployed").flush();
    for (const auto& path : {w.t / "state", w.t / "deployed"}) REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
    w.start();
    REQUIRE(w.done(1));
    // Moved in unreadable (mode 000): its watch fails, and its files cannot be listed.
    TempDir outside;
    fs::create_directories(outside / "locked/replicas");
    std::ofstream(outside / "locked/db.nix") << "{ replicas = 1; }\n";
    std::ofstream(outside / "locked/replicas/r.nix") << "{ r = 1; }\n";
    REQUIRE(::chmod((outside / "locked").c_str(), 0) == 0);
    fs::rename(outside / "locked", w.folder + "/services/locked");
    REQUIRE(w.init->expectLog("cannot watch " + w.folder + "/services/locked: Permission denied"));
    // Made readable: the init's watch on services/ says so (IN_ATTRIB), and its files are deployed.
    REQUIRE(::chmod((w.folder + "/services/locked").c_str(), 0755) == 0);
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), Catch::Contains("services/locked/db.nix={ replicas = 1; }") &&
                                       Catch::Contains("services/locked/replicas/r.nix={ r = 1; }"));
    // ...and saves inside it, and in the folder below it, are seen.
    w.put("services/locked/db.nix", "{ replicas = 2; }\n");
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), Catch::Contains("services/locked/db.nix={ replicas = 2; }"));
    w.put("services/locked/replicas/r.nix", "{ r = 2; }\n");
    REQUIRE(w.done(4));
    CHECK_THAT(w.records().back(), Catch::Contains("services/locked/replicas/r.nix={ r = 2; }"));
    w.sentinel(5);
    CHECK(count(w.init->stderrText(), "cannot watch") == 1);
    w.stop();
}

// A save as sed -i does it: a temporary file in the same folder renamed over `path`.
static void replaceFile(const std::string& path, const std::string& text) {
    std::string temp = fs::path(path).parent_path().string() + "/sedAbC123";
    std::ofstream(temp) << text;
    fs::rename(temp, path);
}

TEST_CASE("a model bind-mounted as a single file deploys writes in place from outside and inside, and says a replacing save is not seen", "[watch]") {
    Watched w;
    // The host's file, mounted over the model's file: its events go to the host folder's watch,
    // never to the model folder's.
    std::string host = w.t.write("host/processes.nix", "{ host = 1; }\n");
    w.bind = {host, w.folder + "/processes.nix"};
    w.start();
    REQUIRE(w.done(1));
    CHECK_THAT(w.records().back(), Catch::Contains("processes.nix={ host = 1; }"));
    std::string mounted = w.folder + "/processes.nix is a single-file bind mount";
    REQUIRE(w.init->expectLog(mounted));
    // Written in place on the host (the same inode).
    std::ofstream(host, std::ios::trunc) << "{ host = 2; }\n";
    REQUIRE(w.done(2));
    CHECK_THAT(w.records().back(), Catch::Contains("processes.nix={ host = 2; }"));
    // Appended to from inside the init's mount namespace.
    w.inside("echo '# inside' >> " + w.folder + "/processes.nix");
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), Catch::Contains("processes.nix={ host = 2; } # inside"));
    // Replaced on the host: the mount still shows the old file, now unlinked. One warning says so.
    replaceFile(host, "{ host = 3; }\n");
    std::string replaced = w.folder + "/processes.nix was replaced or removed on the host";
    REQUIRE(w.init->expectLog(replaced));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("restart"));
    replaceFile(host, "{ host = 4; }\n"); // the old file is not touched again: no event, no second line
    w.put("ids.nix", "{ }\n");            // a barrier: its save is read after anything the replace gave
    REQUIRE(w.done(4));
    CHECK(count(w.init->stderrText(), replaced) == 1);
    CHECK(count(w.init->stderrText(), mounted) == 1);
    CHECK_THAT(w.records().back(), Catch::Contains("processes.nix={ host = 2; } # inside"));
    w.stop();
}

TEST_CASE("after a refusal for the folder's mode, fixing the mode of the model's folder deploys", "[watch]") {
    Watched w;
    w.start();
    REQUIRE(w.done(1));
    REQUIRE(::chmod(w.folder.c_str(), 0777) == 0);
    w.put("processes.nix", "{ main = 2; }\n");
    REQUIRE(w.init->expectLog("deploy #2: refused", 30s));
    REQUIRE(::chmod(w.folder.c_str(), 0755) == 0);
    REQUIRE(w.done(3));
    CHECK_THAT(w.records().back(), Catch::Contains("processes.nix={ main = 2; }"));
    // The parent folder's mode is checked too, and watched.
    std::string parent = fs::path(w.folder).parent_path().string();
    REQUIRE(::chmod(parent.c_str(), 0777) == 0);
    w.put("processes.nix", "{ main = 4; }\n");
    REQUIRE(w.init->expectLog("deploy #4: refused", 30s));
    REQUIRE(::chmod(parent.c_str(), 0755) == 0);
    REQUIRE(w.done(5));
    w.stop();
}

TEST_CASE("a deployment names the files whose saves it deploys", "[watch]") {
    Watched w;
    w.put("services/web.nix", "{ port = 1; }\n");
    w.start();
    REQUIRE(w.done(1));
    w.put("ids.nix", "{ }\n");
    REQUIRE(w.done(2));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("deploy #2: ids.nix changed"));
    // Saved while the init is frozen: read at once, in one quiet period.
    pid_t pid = namespaceInit(w.init->pid());
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    w.put("services/web.nix", "{ port = 2; }\n");
    w.put("processes.nix", "{ main = 3; }\n");
    REQUIRE(::kill(pid, SIGCONT) == 0);
    REQUIRE(w.done(3));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("deploy #3: processes.nix, services/web.nix changed"));
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    for (const char* name : {"a.nix", "b.nix", "c.nix", "d.nix", "e.nix"}) w.put(name, "{ }\n");
    REQUIRE(::kill(pid, SIGCONT) == 0);
    REQUIRE(w.done(4));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("deploy #4: a.nix, b.nix, c.nix and 2 more changed"));
    w.stop();
}

TEST_CASE("a bind-mounted model folder removed on the host is said to be removed, and that a restart is needed", "[watch]") {
    Watched w;
    std::string host = w.t / "host";
    w.t.write("host/processes.nix", "{ host = 1; }\n");
    w.bind = {host, w.folder};
    w.start();
    REQUIRE(w.done(1));
    // Removed and created again on the host: the mount keeps the removed folder.
    fs::remove_all(host);
    w.t.write("host/processes.nix", "{ host = 2; }\n");
    REQUIRE(w.init->expectLog("processes.nix does not exist: the folder " + w.folder + " itself was removed", 30s));
    CHECK_THAT(w.init->stderrText(), Catch::Contains("restart"));
    w.stop();
}
