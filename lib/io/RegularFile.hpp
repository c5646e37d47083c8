#pragma once
// Reading a file that a user controls (the configuration, the model, supervisord.conf) from the
// init's one thread. A FIFO blocks a read forever, /dev/zero never ends and a huge file eats the
// memory of PID 1: only regular files are read, never blocking, and never past a cap.
#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>
#include <sys/types.h>

namespace nixproc {

struct FileContent {
    std::optional<std::string> text; // the whole file; nullopt when it could not be read
    std::string error;               // why not: "is a FIFO, not a regular file", "No such file or directory"
    int errno_value = 0;             // ENOENT for a missing file (callers may treat that apart)
    uid_t owner = 0;                 // of the descriptor that was read (not of a path that may have moved)
    unsigned mode = 0;               // st_mode of that descriptor
    bool error_is_phrase = false;    // `error` goes on from the path ("is a FIFO..."), not strerror's text

    bool missing() const { return !text && errno_value == ENOENT; }
    // The error after the path, as one would say it: "PATH is a FIFO, not a regular file",
    // "PATH: Too many levels of symbolic links".
    std::string describeError(const std::string& path) const;
};

inline constexpr std::size_t kMaxUserFileBytes = 4 * 1024 * 1024;

// Reads `path` (symlinks followed) when it is a regular file of at most `max_bytes`. The type is
// checked before it is opened (a device is never opened) and again on the open descriptor (it may
// have been swapped meanwhile); the open never blocks.
FileContent readRegularFile(const std::string& path, std::size_t max_bytes = kMaxUserFileBytes);

// "a FIFO", "a folder", "a character device"... for a st_mode.
std::string fileTypeName(unsigned mode);

} // namespace nixproc
