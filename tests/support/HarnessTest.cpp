// The test harness's waits: a wait ends early when the log says its event will not come, and
// every wait that ends without its event prints why and the program's output (what a CI log
// needs to explain a failed test).
#include "support/Harness.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <sstream>
#include <stdexcept>

using namespace harness;

namespace {

// What the harness prints to std::cerr while it lives.
struct CapturedCerr {
    std::ostringstream text;
    std::streambuf* old = std::cerr.rdbuf(text.rdbuf());
    ~CapturedCerr() { std::cerr.rdbuf(old); }
};

// A program that logs `line` on stderr, then hangs: an init that will never log what a test waits
// for (~Child kills it).
std::vector<std::string> logsThenHangs(const std::string& line) {
    return {"sh", "-c", "printf '%s\\n' \"$0\" >&2; printf 'half a line'; exec sleep 600", line};
}

double secondsSince(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

TEST_CASE("expectLog stops at a failure line at once, not at its timeout, and prints the log", "[harness]") {
    Child init(logsThenHangs("nixproc-init error: deploy #2: failed after 0.1 s: deploy.check exited with status 1"));
    CapturedCerr err;
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(init.expectLog("deploy #2: done", 60s, deployFailures(2)));
    CHECK(secondsSince(start) < 10);
    CHECK_THAT(err.text.str(), Catch::Contains("\"deploy #2: failed\" in its stderr: \"deploy #2: done\" will not come"));
    CHECK_THAT(err.text.str(), Catch::Contains("harness: its stderr so far (") &&
                                   Catch::Contains("deploy.check exited with status 1\nharness: end of its stderr so far"));
    CHECK_THAT(err.text.str(), Catch::Contains("sh -c"));
}

TEST_CASE("deployFailures names every other end of that deployment, and of no other", "[harness]") {
    std::string log = "deploy #12: failed after 1.0 s\ndeploy #3: refused after 0.0 s\ndeploy #4: timed out after 1.0 s\n"
                      "deploy #5: interrupted after 0.2 s\n";
    for (int n : {3, 4, 5}) {
        int found = 0;
        for (const auto& line : deployFailures(n)) found += count(log, line);
        CHECK(found == 1);
    }
    for (const auto& line : deployFailures(1)) CHECK(count(log, line) == 0);
    CHECK(deployFailures(2).size() == 4);
}

TEST_CASE("a wait that times out prints what it waited for and the program's output so far", "[harness]") {
    Child init(logsThenHangs("nixproc-init info: deploy #1: first deployment"));
    CapturedCerr err;
    CHECK_FALSE(init.expectLog("deploy #1: done", 300ms));
    CHECK_THAT(err.text.str(), Catch::Contains("expectLog on pid " + std::to_string(init.pid())) &&
                                   Catch::Contains("no \"deploy #1: done\" in its stderr after 0.3 s") &&
                                   Catch::Contains("nixproc-init info: deploy #1: first deployment"));
    err.text.str("");
    CHECK_FALSE(init.readLine(300ms));
    CHECK_THAT(err.text.str(), Catch::Contains("readLine on pid") && Catch::Contains("no line on its stdout after 0.3 s") &&
                                   Catch::Contains("its stdout not yet read (11 bytes):\nhalf a line\n") &&
                                   Catch::Contains("deploy #1: first deployment"));
    err.text.str("");
    CHECK_FALSE(init.expect("ready", 300ms));
    CHECK_THAT(err.text.str(), Catch::Contains("no \"ready\" on its stdout after 0.3 s") && Catch::Contains("half a line"));
    err.text.str("");
    CHECK_THROWS_WITH(init.wait(300ms), Catch::Contains("timed out waiting for pid"));
    CHECK_THAT(err.text.str(), Catch::Contains("wait on pid") && Catch::Contains("still running after 0.3 s") &&
                                   Catch::Contains("deploy #1: first deployment"));
}

TEST_CASE("a wait whose program has exited ends at once, and says so", "[harness]") {
    Child init({"sh", "-c", "echo 'nixproc-init error: no such file' >&2"});
    CapturedCerr err;
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(init.expectLog("deploy #1: done", 60s));
    CHECK(secondsSince(start) < 10);
    CHECK_THAT(err.text.str(), Catch::Contains("its output closed without \"deploy #1: done\"") &&
                                   Catch::Contains("nixproc-init error: no such file"));
    err.text.str("");
    CHECK_FALSE(init.readLine(60s));
    CHECK_THAT(err.text.str(), Catch::Contains("its stdout closed before a whole line"));
    CHECK(init.wait() == 0);
}

TEST_CASE("a wait that gets its event prints nothing", "[harness]") {
    Child init({"sh", "-c", "echo 'deploy #1: done in 0.1 s' >&2; echo ready"});
    CapturedCerr err;
    CHECK(init.expectLog("deploy #1: done", 30s, deployFailures(1)));
    CHECK(init.readLine() == "ready");
    CHECK(init.wait() == 0);
    CHECK(err.text.str().empty());
}
