#pragma once
// The processes model as files: processes.nix and the extra files beside it (ids.nix...). Its
// fingerprint says whether it changed; its permissions say whether it may be trusted, since
// whoever can write it runs code as root through the switch.
#include <optional>
#include <string>
#include <vector>

namespace nixproc {

struct Model {
    std::string path;               // /etc/nixproc/processes.nix
    std::vector<std::string> extra; // file names in the same folder

    std::string folder() const;
    std::string fileName() const;
    // Every file name that is part of the model, the main one first.
    std::vector<std::string> fileNames() const;

    // A digest of the contents of the files that exist (64-bit FNV-1a over name and content:
    // change detection, not security). nullopt when the main file is missing or unreadable.
    std::optional<std::string> fingerprint() const;

    // Why the model must not be trusted ("" if it may be): the file or its folder is writable by
    // group or others, or owned by another user than the init's.
    std::string insecurity() const;
};

} // namespace nixproc
