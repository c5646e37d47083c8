#pragma once
// A fresh folder under /tmp for one unit test, removed with everything in it at the end (the unit
// tests do not link the integration harness and its TempDir).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

struct Scratch {
    std::string dir;
    Scratch() {
        char tmpl[] = "/tmp/nixproc-unit-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        dir = tmpl;
    }
    ~Scratch() { std::filesystem::remove_all(dir); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};
