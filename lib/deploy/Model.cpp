#include "deploy/Model.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace nixproc {
namespace {

struct Fnv1a {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    void add(const char* data, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            hash ^= static_cast<unsigned char>(data[i]);
            hash *= 0x100000001b3ULL;
        }
    }
    void add(const std::string& s) { add(s.data(), s.size() + 1); } // with its terminator
};

std::string insecurityOf(const std::string& path, const char* what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return "";
    if (st.st_uid != ::geteuid())
        return std::string(what) + " " + path + " is owned by uid " + std::to_string(st.st_uid) + ", not by uid " +
               std::to_string(::geteuid()) + " that runs the switch";
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return std::string(what) + " " + path + " is writable by " + ((st.st_mode & S_IWOTH) ? "others" : "its group") +
               " (mode " + mode + ")";
    }
    return "";
}

} // namespace

std::string Model::folder() const { return std::filesystem::path(path).parent_path().string(); }
std::string Model::fileName() const { return std::filesystem::path(path).filename().string(); }

std::vector<std::string> Model::fileNames() const {
    std::vector<std::string> names{fileName()};
    names.insert(names.end(), extra.begin(), extra.end());
    return names;
}

std::optional<std::string> Model::fingerprint() const {
    Fnv1a fnv;
    bool first = true;
    for (const auto& name : fileNames()) {
        std::ifstream in(folder() + "/" + name, std::ios::binary);
        if (!in) {
            if (first) return std::nullopt;
            continue;
        }
        first = false;
        fnv.add(name);
        char buf[8192];
        while (in.read(buf, sizeof buf) || in.gcount() > 0) fnv.add(buf, static_cast<std::size_t>(in.gcount()));
        if (in.bad()) return std::nullopt;
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv.hash));
    return std::string(hex);
}

std::string Model::insecurity() const {
    if (auto why = insecurityOf(folder(), "the model's folder"); !why.empty()) return why;
    for (const auto& name : fileNames())
        if (auto why = insecurityOf(folder() + "/" + name, "the model file"); !why.empty()) return why;
    return "";
}

} // namespace nixproc
