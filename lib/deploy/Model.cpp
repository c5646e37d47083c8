#include "deploy/Model.hpp"

#include "io/FileWrite.hpp"

#include "io/PathTrust.hpp"
#include "io/RegularFile.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace nixproc {
namespace {

namespace fs = std::filesystem;

struct Fnv1a {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    void add(const char* data, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            hash ^= static_cast<unsigned char>(data[i]);
            hash *= 0x100000001b3ULL;
        }
    }
    void add(const std::string& s) { add(s.data(), s.size() + 1); } // with its terminator
    std::string hex() const {
        char text[17];
        std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
        return text;
    }
};

// vim's swap and backup files, emacs' lock and autosave files, mcedit's temporaries.
bool isEditorFile(const std::string& name) {
    return name.empty() || name.front() == '.' || name.front() == '#' || name.back() == '~' ||
           name.starts_with("cooledit") || name.ends_with(".swp") || name.ends_with(".swx");
}

// Relative names of the model's files under `folder`, sorted; real subfolders are descended
// (bounded), folder symlinks are not (they could lead anywhere, or loop).
std::vector<std::string> listModelFiles(const Model& model, std::string& error) {
    std::vector<std::string> names;
    std::error_code ec;
    fs::recursive_directory_iterator it(model.folder(), fs::directory_options::none, ec), end;
    if (ec) {
        error = model.folder() + ": " + ec.message();
        return names;
    }
    fs::path last; // the entry the iteration stood at: an error is in it or just after it
    for (; it != end; it.increment(ec)) {
        last = it->path();
        std::string name = it->path().filename().string();
        if (isEditorFile(name)) {
            if (it->is_directory(ec)) it.disable_recursion_pending();
            continue;
        }
        if (it->is_directory(ec) && !it->is_symlink(ec)) {
            if (!isModelFolder(name, it.depth() + 1)) it.disable_recursion_pending();
            continue;
        }
        // The entry's own name under the folder: a file that is a link is copied under its name
        // (fs::relative would resolve it, and name where it leads, even outside the folder).
        std::string relative = it->path().lexically_relative(model.folder()).string();
        bool top = it.depth() == 0;
        if (name.ends_with(".nix") || (top && std::find(model.extra.begin(), model.extra.end(), name) != model.extra.end()))
            names.push_back(relative);
        if (names.size() > kMaxModelFiles) {
            error = model.folder() + ": more than " + std::to_string(kMaxModelFiles) + " model files";
            return {};
        }
    }
    // A folder that cannot be listed (no permission, gone while listing) ends the iteration with
    // ec set: part of a model must never pass for the whole of it.
    if (ec) {
        error = "cannot list the model's folder " + model.folder() + ": " + ec.message() +
                (last.empty() ? "" : " (at or just after " + last.string() + ")");
        return {};
    }
    std::sort(names.begin(), names.end());
    return names;
}

void writeFileIn(int dir_fd, const std::string& relative, const std::string& content, const std::string& shown) {
    auto fail = [&](const char* step) { throw std::runtime_error(shown + ": " + step + ": " + std::strerror(errno)); };
    // Only names below the copy's folder: never write beside or above it.
    for (const auto& part : fs::path(relative))
        if (relative.empty() || relative.front() == '/' || part == ".." || part == "." || part.empty())
            throw std::runtime_error(shown + ": not a name inside the model's copy");
    // Sub-folders of the copy (modules/...).
    std::string::size_type slash = 0;
    while ((slash = relative.find('/', slash)) != std::string::npos) {
        std::string sub = relative.substr(0, slash++);
        if (::mkdirat(dir_fd, sub.c_str(), 0700) != 0 && errno != EEXIST) fail("create folder");
    }
    int fd = ::openat(dir_fd, relative.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) fail("create");
    std::string why = writeAll(fd, content, shown);
    ::close(fd);
    if (!why.empty()) throw std::runtime_error(why);
}

} // namespace

std::string Model::folder() const { return fs::path(path).parent_path().string(); }
std::string Model::fileName() const { return fs::path(path).filename().string(); }

bool isModelFolder(const std::string& name, int level) { return !isEditorFile(name) && level < kMaxModelDepth; }

bool Model::isModelFile(const std::string& name) const {
    if (isEditorFile(name)) return false;
    return name.ends_with(".nix") || name == fileName() || std::find(extra.begin(), extra.end(), name) != extra.end();
}

Model::Read Model::read() const {
    Read out;
    auto fail = [&](std::string message, bool missing = false) {
        out.error = {missing, std::move(message)};
        return std::move(out);
    };
    auto main = readRegularFile(path, kMaxModelBytes);
    if (!main.text && main.missing()) {
        // A folder with no link left is reachable only through a mount of it (docker -v
        // host-folder:/etc/nixproc): removed on the host, and what was created again at its path
        // there is out of reach until the mount is made again.
        struct stat st {};
        if (::stat(folder().c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0)
            return fail(path + " does not exist: the folder " + folder() +
                            " itself was removed (a bind mount keeps the folder it was given, not one created again "
                            "at its path on the host); restart the container (or the init) to see the new folder",
                        true);
    }
    if (!main.text) return fail(main.missing() ? path + " does not exist" : main.describeError(path), main.missing());

    ModelSnapshot snap;
    std::string error;
    auto names = listModelFiles(*this, error);
    if (!error.empty()) return fail(error);
    if (std::find(names.begin(), names.end(), fileName()) == names.end()) names.insert(names.begin(), fileName());
    std::sort(names.begin(), names.end());

    // Everything above the folder, as written and as resolved (the folder may be a symlink).
    std::error_code ec;
    std::string real_folder = fs::canonical(folder(), ec).string();
    snap.insecurity = untrustedPath(folder());
    if (snap.insecurity.empty() && !ec) snap.insecurity = untrustedPath(real_folder);

    std::size_t total = 0;
    Fnv1a fnv;
    for (const auto& name : names) {
        std::string file = folder() + "/" + name;
        auto content = name == fileName() ? main : readRegularFile(file, kMaxModelBytes);
        if (!content.text) {
            if (content.missing()) continue; // removed since the listing: not part of it now
            return fail(content.describeError(file));
        }
        total += content.text->size();
        if (total > kMaxModelBytes) return fail(folder() + ": the model is larger than " + std::to_string(kMaxModelBytes >> 20) + " MiB");
        if (snap.insecurity.empty())
            snap.insecurity = untrustedOwnerOrMode("the model file " + file, content.owner, content.mode);
        // A file that is a symlink: where it leads must be as safe as the folder.
        if (snap.insecurity.empty()) {
            struct stat st {};
            if (::lstat(file.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
                std::string target = fs::canonical(file, ec).string();
                if (!ec) snap.insecurity = untrustedPath(fs::path(target).parent_path().string());
            }
        }
        fnv.add(name);
        fnv.add(*content.text);
        snap.files.emplace_back(name, std::move(*content.text));
    }
    snap.fingerprint = fnv.hex();
    out.snapshot = std::move(snap);
    return out;
}

std::optional<std::string> Model::fingerprint() const {
    auto r = read();
    if (!r.snapshot) return std::nullopt;
    return r.snapshot->fingerprint;
}

std::string ModelSnapshot::writeTo(const std::string& folder, const std::string& main_name) const {
    std::error_code ec;
    fs::remove_all(folder, ec); // the previous deployment's copy
    if (ec) throw std::runtime_error(folder + ": remove the previous copy: " + ec.message());
    if (::mkdir(folder.c_str(), 0700) != 0) throw std::runtime_error(folder + ": create folder: " + std::strerror(errno));
    int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) throw std::runtime_error(folder + ": open: " + std::strerror(errno));
    try {
        for (const auto& [name, content] : files) writeFileIn(dir_fd, name, content, folder + "/" + name);
    } catch (...) {
        ::close(dir_fd);
        throw;
    }
    ::close(dir_fd);
    return folder + "/" + main_name;
}

} // namespace nixproc
