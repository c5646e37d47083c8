#include "deploy/ProfileDiff.hpp"

#include "io/RegularFile.hpp"

#include <cctype>
#include <filesystem>

namespace nixproc {
namespace fs = std::filesystem;
namespace {

// "S10webapp" → "webapp" for rc scripts; "nginx.conf" → "nginx".
std::string instanceName(std::string name, const ProfileLayout& layout) {
    name.erase(0, layout.prefix.size());
    if (!layout.prefix.empty())
        while (!name.empty() && std::isdigit(static_cast<unsigned char>(name.front()))) name.erase(0, 1);
    if (!layout.suffix.empty() && name.ends_with(layout.suffix)) name.resize(name.size() - layout.suffix.size());
    return name;
}

} // namespace

// A link (what a Nix profile holds) resolves to a store path, which changes with its content; a
// plain file is identified by its content.
std::string entryIdentity(const std::string& entry) {
    std::error_code ec;
    if (fs::is_symlink(entry, ec)) {
        auto target = fs::canonical(entry, ec);
        return ec ? "dangling:" + entry : target.string();
    }
    // Read like every file the loop reads: a FIFO or a device placed in a profile must not block.
    FileContent content = readRegularFile(entry);
    if (content.text) return "content:" + *content.text;
    return "unreadable:" + entry + ": " + content.error;
}

ProfileSnapshot readProfile(const std::string& profile, const ProfileLayout& layout) {
    ProfileSnapshot snapshot;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(profile) / layout.folder, ec)) {
        std::string name = e.path().filename().string();
        if (!name.starts_with(layout.prefix) || (!layout.suffix.empty() && !name.ends_with(layout.suffix))) continue;
        snapshot[instanceName(name, layout)] = entryIdentity(e.path().string());
    }
    return snapshot;
}

ProfileDiff diffProfiles(const ProfileSnapshot& before, const ProfileSnapshot& after) {
    ProfileDiff d;
    for (const auto& [name, id] : after) {
        auto old = before.find(name);
        if (old == before.end()) d.added.push_back(name);
        else if (old->second != id) d.changed.push_back(name);
        else d.unchanged.push_back(name);
    }
    for (const auto& [name, id] : before)
        if (!after.contains(name)) d.removed.push_back(name);
    return d;
}

std::string ProfileDiff::describe() const {
    std::string out;
    auto add = [&](const std::vector<std::string>& names, char mark) {
        for (const auto& n : names) out += (out.empty() ? "" : " ") + std::string(1, mark) + n;
    };
    add(added, '+');
    add(removed, '-');
    add(changed, '~');
    add(unchanged, '=');
    return out.empty() ? "no process instances" : out;
}

} // namespace nixproc
