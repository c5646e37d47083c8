#pragma once
// Writing the init's own files safely, whatever was planted where they go: the state file, the
// model's copy, Disnix's empty manifest.
#include <string>
#include <string_view>

namespace nixproc {

// All of `data` to `fd`, through EINTR and short writes. "" or "SHOWN: write: why".
std::string writeAll(int fd, std::string_view data, const std::string& shown);

// Replaces `path` with `content`: a fresh PATH.tmp (a link or file planted there is removed, never
// written through: O_EXCL|O_NOFOLLOW), written, synced, renamed over `path` (a link there is
// replaced, not followed), and the folder synced so that the rename survives a crash.
// "" or "FILE: step: why".
std::string replaceFile(const std::string& path, std::string_view content);

// A new folder of our own (mode 0700) under $TMPDIR or /tmp named PREFIX-XXXXXX, for when the
// state folder cannot be used; "" (errno set) when none can be made.
std::string makePrivateFolder(const std::string& prefix);

} // namespace nixproc
