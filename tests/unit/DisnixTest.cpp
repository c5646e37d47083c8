// The disnix manager against manifests shaped as Disnix writes them (tests/fixtures/upstream/disnix,
// rendered by xsl/generatemanifest.xsl): the plan from the coordinator manifest's service mappings,
// the empty manifest that start and stop activate against, and what it refuses.
#include "deploy/ProfileDiff.hpp"
#include "manager/ProcessManager.hpp"
#include "Scratch.hpp"
#include "LogCapture.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace nixproc;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = SOURCE_DIR "/tests/fixtures/upstream/disnix/";

std::string readAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void writeFile(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::trunc | std::ios::binary) << text;
}

// The element <NAME>...</NAME> (or <NAME/>) of a manifest's text, as written.
std::string element(const std::string& text, const std::string& name) {
    auto from = text.find("<" + name);
    REQUIRE(from != std::string::npos);
    auto empty = text.find("/>", from), close = text.find("</" + name + ">", from);
    if (close == std::string::npos || (empty != std::string::npos && empty < text.find('>', from) + 1))
        return text.substr(from, empty + 2 - from);
    return text.substr(from, close + name.size() + 3 - from);
}


// A disnix manager whose coordinator profile is Scratch/profiles/default (a link to a manifest,
// as nix-env leaves it) and whose state folder is Scratch/state, made as StateStore makes it.
struct Disnix {
    Scratch s;
    Config config;
    std::unique_ptr<ProcessManager> manager;
    std::string profile = s.dir + "/profiles/default";

    Disnix() {
        config.process_manager = ManagerKind::Disnix;
        config.profile = profile;
        config.state_dir = s.dir + "/state";
        REQUIRE(::mkdir(config.state_dir.c_str(), 0700) == 0);
        manager = makeProcessManager(config);
    }

    // The profile's next generation: default -> default-N-link -> a copy of `manifest_text`.
    void deploy(const std::string& manifest_text) {
        static int n = 0;
        std::string store = s.dir + "/store/" + std::to_string(++n) + "-manifest.xml";
        writeFile(store, manifest_text);
        std::string link = profile + "-" + std::to_string(n) + "-link";
        fs::create_directories(fs::path(profile).parent_path());
        fs::create_symlink(store, link);
        fs::remove(profile);
        fs::create_symlink(fs::path(link).filename(), profile);
    }
};

std::vector<std::vector<std::string>> argvs(const std::vector<Step>& steps) {
    std::vector<std::vector<std::string>> out;
    for (const auto& s : steps) out.push_back(s.argv);
    return out;
}

} // namespace

TEST_CASE("disnix: the plan has one instance per service mapping of the coordinator manifest, named as its service", "[disnix]") {
    Disnix d;
    d.deploy(readAll(kFixtures + "manifest-v1.xml"));
    auto v1 = d.manager->inventory(d.profile);
    REQUIRE(v1);
    std::vector<std::string> names;
    for (const auto& [name, identity] : *v1) names.push_back(name);
    CHECK(names == std::vector<std::string>{"nginx", "old", "webapp"});
    // What Disnix compares: the service (its key hashes name, type, package and dependencies) and
    // where it is mapped.
    CHECK_THAT(v1->at("webapp"), Catch::Contains("/nix/store/b23i9i27rga2p5n7pwdrc1qm0v7dfwil-webapp") &&
                                     Catch::Contains("localhost") && Catch::Contains("process"));
    CHECK_THAT(v1->at("nginx"), Catch::Contains("/nix/store/im2c0s3qz81gv707ccm05815zcs4rc59-nginx"));

    d.deploy(readAll(kFixtures + "manifest-v2.xml"));
    auto v2 = d.manager->inventory(d.profile);
    REQUIRE(v2);
    CHECK(diffProfiles(*v1, *v2).describe() == "+api -old ~webapp =nginx");
}

TEST_CASE("disnix: no coordinator profile yet, or the image's empty manifest, is an empty inventory", "[disnix]") {
    Disnix d;
    auto none = d.manager->inventory(d.profile);
    REQUIRE(none);
    CHECK(none->empty());
    d.deploy(readAll(kFixtures + "empty-manifest.xml"));
    auto empty = d.manager->inventory(d.profile);
    REQUIRE(empty);
    CHECK(empty->empty());
    d.deploy(readAll(kFixtures + "manifest-v1.xml"));
    auto first = d.manager->inventory(d.profile);
    REQUIRE(first);
    CHECK(diffProfiles(*none, *first).describe() == "+nginx +old +webapp");
}

TEST_CASE("disnix: one service mapped to two targets is two instances", "[disnix]") {
    Disnix d;
    d.deploy(R"(<?xml version="1.0"?>
<manifest version="2"><profiles/><services><service name="k1"><name>web</name><pkg>/nix/store/a-web</pkg><type>process</type><dependsOn/><connectsTo/><providesContainers/></service></services><infrastructure><target name="one"><properties/><containers/><system>x86_64-linux</system><numOfCores>1</numOfCores><clientInterface>disnix-run-activity</clientInterface><targetProperty>hostname</targetProperty></target><target name="two"><properties/><containers/><system>x86_64-linux</system><numOfCores>1</numOfCores><clientInterface>disnix-run-activity</clientInterface><targetProperty>hostname</targetProperty></target></infrastructure><serviceMappings><mapping><container>process</container><service>k1</service><target>one</target></mapping><mapping><container>process</container><service>k1</service><target>two</target></mapping></serviceMappings><snapshotMappings/></manifest>
)");
    auto inventory = d.manager->inventory(d.profile);
    REQUIRE(inventory);
    CHECK(inventory->size() == 2);
    CHECK(inventory->count("web@one/process") == 1);
    CHECK(inventory->count("web@two/process") == 1);
}

TEST_CASE("disnix: start activates the coordinator profile against an empty manifest with its infrastructure, stop the reverse", "[disnix]") {
    Disnix d;
    std::string v1 = readAll(kFixtures + "manifest-v1.xml");
    d.deploy(v1);
    auto start = argvs(d.manager->startSteps());
    REQUIRE(start.size() == 1);
    REQUIRE(start[0].size() == 4);
    const std::string empty = start[0][2];
    CHECK(start[0] == std::vector<std::string>{"disnix-activate", "-o", empty, d.profile});
    CHECK(argvs(d.manager->stopSteps()) == std::vector<std::vector<std::string>>{{"disnix-activate", "-o", d.profile, empty}});
    CHECK(empty == d.config.state_dir + "/disnix-empty-manifest.xml");

    // As build-disnix-env.nix builds it with exprFile = null: version 2, nothing deployed, and
    // the deployed manifest's targets (disnix-activate looks the targets of what it deactivates
    // up in the new manifest, and skips those it does not find).
    std::string text = readAll(empty);
    CHECK_THAT(text, Catch::Contains("<manifest version=\"2\">"));
    CHECK(element(text, "infrastructure") == element(v1, "infrastructure"));
    CHECK(element(text, "infrastructure") == element(readAll(kFixtures + "empty-manifest.xml"), "infrastructure"));
    CHECK(element(text, "services") == "<services/>");
    CHECK(element(text, "serviceMappings") == "<serviceMappings/>");
    CHECK(element(text, "snapshotMappings") == "<snapshotMappings/>");
    auto inventory = d.manager->inventory(empty);
    REQUIRE(inventory);
    CHECK(inventory->empty());
    struct stat st {};
    REQUIRE(::lstat(empty.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 022) == 0);
}

TEST_CASE("disnix: no manifest deployed, or one without services, means no start and no stop step", "[disnix]") {
    Disnix d;
    CHECK(d.manager->startSteps().empty());
    CHECK(d.manager->stopSteps().empty());
    d.deploy(readAll(kFixtures + "empty-manifest.xml")); // the image's first coordinator profile
    CHECK(d.manager->startSteps().empty());
    CHECK(d.manager->stopSteps().empty());
}

TEST_CASE("disnix: the empty manifest follows the deployed infrastructure", "[disnix]") {
    Disnix d;
    std::string v1 = readAll(kFixtures + "manifest-v1.xml");
    d.deploy(v1);
    auto start = argvs(d.manager->startSteps());
    REQUIRE(start.size() == 1);
    std::string empty = start[0][2];
    CHECK_THAT(readAll(empty), Catch::Contains("<numOfCores>1</numOfCores>"));

    std::string more_cores = v1;
    more_cores.replace(more_cores.find("<numOfCores>1<"), 14, "<numOfCores>4<");
    d.deploy(more_cores);
    auto stop = argvs(d.manager->stopSteps());
    REQUIRE(stop.size() == 1);
    CHECK(stop[0][3] == empty);
    CHECK(element(readAll(empty), "infrastructure") == element(more_cores, "infrastructure"));
}

TEST_CASE("disnix: a link planted where the empty manifest goes is replaced, never written through", "[disnix]") {
    Disnix d;
    d.deploy(readAll(kFixtures + "manifest-v1.xml"));
    std::string victim = d.s.dir + "/victim";
    writeFile(victim, "untouched\n");
    fs::create_symlink(victim, d.config.state_dir + "/disnix-empty-manifest.xml");
    auto start = argvs(d.manager->startSteps());
    REQUIRE(start.size() == 1);
    CHECK(readAll(victim) == "untouched\n");
    struct stat st {};
    REQUIRE(::lstat(start[0][2].c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
}

TEST_CASE("disnix: with an unusable state folder the empty manifest goes to a private folder of the init", "[disnix]") {
    for (std::string kind : {"a file", "a folder others can write"}) {
        SECTION(kind) {
            Scratch s;
            Config config;
            config.process_manager = ManagerKind::Disnix;
            config.profile = s.dir + "/default";
            config.state_dir = s.dir + "/state";
            if (kind == "a file") writeFile(config.state_dir, "");
            else REQUIRE((::mkdir(config.state_dir.c_str(), 0777) == 0 && ::chmod(config.state_dir.c_str(), 0777) == 0));
            writeFile(s.dir + "/manifest.xml", readAll(kFixtures + "manifest-v1.xml"));
            fs::create_symlink(s.dir + "/manifest.xml", config.profile);
            std::string empty;
            {
                LogCapture log;
                auto manager = makeProcessManager(config);
                auto start = argvs(manager->startSteps());
                REQUIRE(start.size() == 1);
                empty = start[0][2];
                CHECK(fs::path(empty).parent_path() != fs::path(config.state_dir));
                struct stat st {};
                REQUIRE(::stat(fs::path(empty).parent_path().c_str(), &st) == 0);
                CHECK((st.st_mode & 0777) == 0700);
                CHECK(element(readAll(empty), "infrastructure") == element(readAll(kFixtures + "manifest-v1.xml"), "infrastructure"));
                CHECK_THAT(log.text(), Catch::Contains(config.state_dir));
            }
            CHECK_FALSE(fs::exists(fs::path(empty).parent_path())); // removed with the manager
        }
    }
}

TEST_CASE("disnix: a coordinator manifest that is not a version 2 manifest is an error naming it, and nothing runs", "[disnix]") {
    auto [label, text, why] = GENERATE(table<std::string, std::string, std::string>({
        {"no version", "<?xml version=\"1.0\"?>\n<manifest><services/><infrastructure/><serviceMappings/></manifest>\n", "version"},
        {"version 1", "<?xml version=\"1.0\"?>\n<manifest version=\"1\"><distribution/><activation/></manifest>\n", "version"},
        {"not XML", "<manifest version=\"2\"><services>\n", "parse"},
        {"empty", "", "parse"},
        {"another root", "<?xml version=\"1.0\"?>\n<expr><attrs/></expr>\n", "<manifest"},
        {"a mapping to an unknown service",
         "<manifest version=\"2\"><services/><infrastructure><target name=\"localhost\"/></infrastructure><serviceMappings>"
         "<mapping><container>process</container><service>nope</service><target>localhost</target></mapping></serviceMappings></manifest>",
         "nope"},
        {"a mapping to an unknown target",
         "<manifest version=\"2\"><services><service name=\"k\"><name>web</name><pkg>/nix/store/a-web</pkg><type>process</type></service>"
         "</services><infrastructure/><serviceMappings><mapping><container>process</container><service>k</service>"
         "<target>localhost</target></mapping></serviceMappings></manifest>",
         "localhost"},
    }));
    INFO(label);
    Disnix d;
    d.deploy(text);
    LogCapture log;
    CHECK_FALSE(d.manager->inventory(d.profile));
    CHECK(d.manager->startSteps().empty());
    CHECK(d.manager->stopSteps().empty());
    CHECK_THAT(log.text(), Catch::Contains(d.profile) && Catch::Contains(why));
}

TEST_CASE("disnix: a FIFO as the coordinator profile is reported at once, never read", "[disnix]") {
    Disnix d;
    fs::create_directories(fs::path(d.profile).parent_path());
    REQUIRE(::mkfifo(d.profile.c_str(), 0600) == 0);
    LogCapture log;
    auto started = std::chrono::steady_clock::now();
    CHECK_FALSE(d.manager->inventory(d.profile));
    CHECK(d.manager->startSteps().empty());
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
    CHECK_THAT(log.text(), Catch::Contains(d.profile) && Catch::Contains("FIFO"));
}
