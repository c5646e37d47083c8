#include "io/RegularFile.hpp"
#include "deploy/Model.hpp"

#include "Scratch.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace nixproc;


TEST_CASE("a regular file is read whole, through a symlink too", "[io]") {
    Scratch s;
    std::ofstream(s.dir + "/f") << "hello\n";
    std::filesystem::create_symlink("f", s.dir + "/link");
    CHECK(readRegularFile(s.dir + "/f").text == "hello\n");
    CHECK(readRegularFile(s.dir + "/link").text == "hello\n");
}

TEST_CASE("a FIFO, a device and a folder are refused at once, with their kind", "[io]") {
    Scratch s;
    REQUIRE(::mkfifo((s.dir + "/fifo").c_str(), 0600) == 0);
    std::filesystem::create_symlink("/dev/zero", s.dir + "/zero");
    auto fifo = readRegularFile(s.dir + "/fifo"); // would block forever if it were opened and read
    CHECK_FALSE(fifo.text);
    CHECK(fifo.error == "is a FIFO, not a regular file");
    CHECK(readRegularFile(s.dir + "/zero").error == "is a character device, not a regular file");
    CHECK(readRegularFile(s.dir).error == "is a folder, not a regular file");
}

TEST_CASE("a file over the cap is refused, a missing one says so", "[io]") {
    Scratch s;
    std::ofstream(s.dir + "/big") << std::string(2048, 'x');
    auto big = readRegularFile(s.dir + "/big", 1024);
    CHECK_FALSE(big.text);
    CHECK(big.error == "is larger than 1 KiB");
    CHECK(readRegularFile(s.dir + "/big", 2048).text->size() == 2048);
    auto missing = readRegularFile(s.dir + "/none");
    CHECK(missing.missing());
    CHECK(missing.error == "No such file or directory");
}

TEST_CASE("why a file could not be read reads after its path: PATH: reason, or PATH is a FIFO", "[io]") {
    Scratch s;
    std::filesystem::create_symlink("loop", s.dir + "/loop");
    REQUIRE(::mkfifo((s.dir + "/fifo").c_str(), 0600) == 0);
    auto loop = readRegularFile(s.dir + "/loop");
    CHECK(loop.describeError(s.dir + "/loop") == s.dir + "/loop: Too many levels of symbolic links");
    auto fifo = readRegularFile(s.dir + "/fifo");
    CHECK(fifo.describeError(s.dir + "/fifo") == s.dir + "/fifo is a FIFO, not a regular file");
    std::ofstream(s.dir + "/big") << std::string(2048, 'x');
    CHECK(readRegularFile(s.dir + "/big", 1024).describeError("big") == "big is larger than 1 KiB");
    CHECK(readRegularFile(s.dir + "/none").describeError("none") == "none: No such file or directory");
}

TEST_CASE("the model's read error names the file, then the reason after a colon", "[io][deploy]") {
    Scratch s;
    std::filesystem::create_symlink("processes.nix", s.dir + "/processes.nix");
    auto read = Model{s.dir + "/processes.nix", {}}.read();
    REQUIRE_FALSE(read.snapshot);
    CHECK(read.error.message == s.dir + "/processes.nix: Too many levels of symbolic links");
    std::filesystem::remove(s.dir + "/processes.nix");
    std::ofstream(s.dir + "/processes.nix") << "{ }\n";
    std::filesystem::create_symlink("other.nix", s.dir + "/other.nix");
    auto other = Model{s.dir + "/processes.nix", {}}.read();
    REQUIRE_FALSE(other.snapshot);
    CHECK(other.error.message == s.dir + "/other.nix: Too many levels of symbolic links");
}
