// disnix as a nix-processmgmt image runs it (nixproc/backends/disnix/image-steps/disnix-dynamic.nix,
// npm 0e9ec77), under nixproc-init as PID 1 with the upstream layout: the switch is
// nixproc-disnix-switch (stand-in), disnix-deploy (stand-in) activates the manifest and sets
// Disnix's coordinator profile /nix/var/nix/profiles/per-user/root/disnix-coordinator/default
// with the real nix-env, and the init's start and stop steps are the image's
// `disnix-activate -o EMPTY PROFILE` and `disnix-activate -o PROFILE EMPTY` (stand-in). That path
// cannot be moved by configuration: the init runs in its own mount namespace with a folder of the
// test bound over /nix/var/nix/profiles/per-user, and the host's is left as it was.
#include "process/Children.hpp"
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sys/stat.h>

using namespace harness;
namespace fs = std::filesystem;

namespace {

const std::string kPerUser = "/nix/var/nix/profiles/per-user";
const std::string kCoordinator = kPerUser + "/root/disnix-coordinator/default";

// What the host's per-user profiles folder holds (it must not change).
std::set<std::string> listing(const std::string& folder) {
    std::set<std::string> names;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(folder, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        names.insert(it->path().string());
    return names;
}

// The element <NAME>...</NAME> of a manifest, as written.
std::string element(const std::string& text, const std::string& name) {
    auto from = text.find("<" + name + ">"), to = text.find("</" + name + ">");
    if (from == std::string::npos || to == std::string::npos) return "";
    return text.substr(from, to + name.size() + 3 - from);
}

struct Image {
    TempDir t;
    std::string per_user = t / "per-user"; // the namespace's /nix/var/nix/profiles/per-user
    std::string coordinator = per_user + "/root/disnix-coordinator/default"; // as the test sees it
    std::string model = t / "etc/nixproc/processes.nix";
    std::string empty = t / "state/disnix-empty-manifest.xml";
    Fifo up{t / "up"}; // the processes say there when they run and when they stop
    std::unique_ptr<Child> init;

    Image() {
        // As the image's runAsRoot leaves it (disnix-dynamic.nix:31-34): the coordinator profile a
        // link to the empty manifest that build-disnix-env.nix makes with exprFile = null.
        fs::create_directories(fs::path(coordinator).parent_path());
        std::string image_empty = t.write("image/empty-manifest.xml",
                                          readFile(SOURCE_DIR "/tests/fixtures/upstream/disnix/empty-manifest.xml"));
        fs::create_symlink(image_empty, coordinator);
        save("{\n  webapp = \"1\";\n  nginx = \"1\";\n  old = \"1\";\n}\n");
        t.write("init.yaml", "process_manager: disnix\nprocesses: " + model + "\nstate_dir: " + t / "state" +
                                 "\nnixproc:\n  state_dir: " + t / "var" +
                                 "\nbootstrap:\n  channel: \"\"\nwatch:\n  debounce_ms: 100\n");
    }

    void save(const std::string& text) const {
        fs::create_directories(fs::path(model).parent_path());
        std::ofstream(model, std::ios::trunc) << text;
    }

    void boot() {
        init = std::make_unique<Child>(
            inPidNamespaceWithBind(per_user, kPerUser, {initBinary(), "-c", t / "init.yaml"}),
            Options{.env = {std::string("PATH=") + STANDINS_DIR + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HOME=" + t / "home", "NIXPROC_STANDIN_UP=" + t / "up", "NIXPROC_STANDIN_LOG=" + t / "calls"}});
    }

    bool done(int n) { return init->expectLog("deploy #" + std::to_string(n) + ": done", 60s, deployFailures(n)); }

    // The next `n` lines of the processes, in whatever order they came.
    std::multiset<std::string> lines(int n) {
        std::multiset<std::string> got;
        for (int i = 0; i < n; ++i) got.insert(up.readLine().value_or("(nothing in 30 s)"));
        return got;
    }

    // docker stop: the stop step deactivates every process, and nothing is left to sweep.
    void stop(const std::multiset<std::string>& stopped) {
        REQUIRE(::kill(namespaceInit(init->pid()), SIGTERM) == 0);
        CHECK(lines(static_cast<int>(stopped.size())) == stopped);
        CHECK(init->wait(20s) == 0);
        CHECK_THAT(init->stderrText(), Catch::Contains("disnix-activate (deactivate) |"));
        CHECK_THAT(init->stderrText(), !Catch::Contains("Skip service"));
        CHECK_THAT(init->stderrText(), !Catch::Contains("stopping the processes left behind"));
        CHECK_THAT(init->stderrText(), !Catch::Contains("SIGKILL"));
    }
};

} // namespace

TEST_CASE("disnix with the upstream layout: deployed to the coordinator profile, planned from its manifest, "
          "activated from it at start and deactivated at stop",
          "[upstream][disnix]") {
    auto host_before = listing(kPerUser);
    Image image;

    // First boot: the image's empty manifest maps nothing, so there is nothing to start; the
    // first deployment activates everything.
    image.boot();
    REQUIRE(image.init->expectLog("disnix started"));
    REQUIRE(image.done(1));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("deploy #1: +nginx +old +webapp"));
    CHECK(image.lines(3) == std::multiset<std::string>{"nginx 1", "old 1", "webapp 1"});
    // disnix-deploy set the coordinator profile as nix-env does: a generation link to the
    // manifest in the store.
    CHECK(fs::read_symlink(image.coordinator) == "default-1-link");
    std::string manifest = fs::read_symlink(image.per_user + "/root/disnix-coordinator/default-1-link").string();
    CHECK_THAT(manifest, Catch::StartsWith("/nix/store/") && Catch::EndsWith("-manifest.xml"));

    // A change: the plan is the manifest's, Disnix deactivates what went or changed, then
    // activates what came or changed.
    image.save("{\n  webapp = \"2\";\n  nginx = \"1\";\n  api = \"1\";\n}\n");
    REQUIRE(image.done(2));
    CHECK_THAT(image.init->stderrText(), Catch::Contains("deploy #2: +api -old ~webapp =nginx"));
    CHECK(image.lines(4) == std::multiset<std::string>{"old 1 stopped", "webapp 1 stopped", "api 1", "webapp 2"});
    CHECK(fs::read_symlink(image.coordinator) == "default-2-link");

    image.stop({"api 1 stopped", "nginx 1 stopped", "webapp 2 stopped"});
    CHECK_THAT(readFile(image.t / "calls"), Catch::Contains("disnix-activate -o " + kCoordinator + " " + image.empty + "\n"));
    // The empty manifest is build-disnix-env.nix's with exprFile = null: version 2, nothing mapped,
    // the deployed manifest's targets.
    std::string empty = readFile(image.empty), deployed = readFile(image.coordinator);
    CHECK_THAT(empty, Catch::Contains("<manifest version=\"2\"><profiles/><services/>"));
    CHECK(element(empty, "infrastructure") == element(deployed, "infrastructure"));
    CHECK_FALSE(element(empty, "infrastructure").empty());

    // Restart on the same folders: the start step activates the coordinator manifest again, and
    // the unchanged model is not deployed again.
    image.boot();
    REQUIRE(image.init->expectLog("disnix started"));
    CHECK(image.lines(3) == std::multiset<std::string>{"api 1", "nginx 1", "webapp 2"});
    CHECK_THAT(readFile(image.t / "calls"), Catch::Contains("disnix-activate -o " + image.empty + " " + kCoordinator + "\n"));
    REQUIRE(image.init->expectLog("nothing to deploy at boot"));
    image.stop({"api 1 stopped", "nginx 1 stopped", "webapp 2 stopped"});

    CHECK(listing(kPerUser) == host_before);
}
