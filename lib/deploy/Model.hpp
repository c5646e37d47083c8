#pragma once
// The processes model as files: processes.nix and every other *.nix file under its folder (the
// constructors and modules it imports), plus watch.extra files. A deployment reads the model once
// into a ModelSnapshot: that content is checked for trust, fingerprinted, and written into a
// private folder from which deploy.check and the switch read it, so what was fingerprinted is
// what is deployed, whatever is saved meanwhile, and nobody can swap a file between the check
// and the switch.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nixproc {

// Bounds on what a model may be (PID 1 reads it into memory).
inline constexpr std::size_t kMaxModelFiles = 1000;
inline constexpr std::size_t kMaxModelBytes = 16 * 1024 * 1024;
inline constexpr int kMaxModelDepth = 9; // names in a model file's path below the folder: 8 sub-folders and the file

// Whether a sub-folder `level` folders below the model's folder (1 for services/) is read as part
// of the model: not hidden nor an editor's (.git, #x#, x~), and within kMaxModelDepth. The reader
// and the watcher both ask this, so that what is watched is what is read.
bool isModelFolder(const std::string& name, int level);

struct ModelSnapshot {
    std::vector<std::pair<std::string, std::string>> files; // path relative to the folder → content, sorted
    std::string fingerprint; // 64-bit FNV-1a over names and contents: change detection, not security
    std::string insecurity;  // why it must not be trusted, "" if it may be

    // Replaces `folder` (created 0700) with these files; returns the path of the main file in it.
    // Throws std::runtime_error naming the file and the step.
    std::string writeTo(const std::string& folder, const std::string& main_name) const;
};

struct ModelError {
    bool missing = false; // the main file does not exist (nothing to deploy, not an error)
    std::string message;  // "/etc/nixproc/processes.nix is a FIFO, not a regular file"
};

struct Model {
    std::string path;               // /etc/nixproc/processes.nix
    std::vector<std::string> extra; // more file names in the same folder (ids.nix...), any suffix

    std::string folder() const;
    std::string fileName() const;

    // Whether a name in the model's folder is part of the model: *.nix or an extra file, and not
    // an editor's temporary, backup or lock file, nor a hidden one (a ConfigMap's ..data).
    bool isModelFile(const std::string& name) const;

    // Reads the whole model (regular files only, never blocking, within the bounds above).
    // Either a snapshot or why there is none.
    struct Read {
        std::optional<ModelSnapshot> snapshot;
        ModelError error;
    };
    Read read() const;

    // The fingerprint of what read() would give; nullopt when it cannot be read.
    std::optional<std::string> fingerprint() const;
};

} // namespace nixproc
