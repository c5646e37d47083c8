#include "io/RegularFile.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nixproc {
namespace {

// strerror's text for errno `err`: it follows the path after a colon.
FileContent failure(int err) { return {std::nullopt, std::strerror(err), err, 0, 0, false}; }

// A phrase that goes on from the path: "is a FIFO, not a regular file".
FileContent refusal(int err, std::string phrase) { return {std::nullopt, std::move(phrase), err, 0, 0, true}; }

FileContent notRegular(unsigned mode) { return refusal(EINVAL, "is " + fileTypeName(mode) + ", not a regular file"); }

std::string sizeText(std::size_t bytes) {
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0) return std::to_string(bytes / (1024 * 1024)) + " MiB";
    if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + " KiB";
    return std::to_string(bytes) + " bytes";
}

} // namespace

std::string FileContent::describeError(const std::string& path) const { return path + (error_is_phrase ? " " : ": ") + error; }

std::string fileTypeName(unsigned mode) {
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a folder";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "not a file";
    }
}

FileContent readRegularFile(const std::string& path, std::size_t max_bytes) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return failure(errno);
    if (!S_ISREG(st.st_mode)) return notRegular(st.st_mode);
    if (static_cast<std::size_t>(st.st_size) > max_bytes) return refusal(EFBIG, "is larger than " + sizeText(max_bytes));

    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return failure(errno);
    // Swapped for something else between the stat and the open?
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int err = errno;
        ::close(fd);
        return S_ISREG(st.st_mode) ? failure(err) : notRegular(st.st_mode);
    }
    std::string text;
    text.reserve(static_cast<std::size_t>(st.st_size));
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            ::close(fd);
            return failure(err);
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > max_bytes) { // it grew while being read
            ::close(fd);
            return refusal(EFBIG, "is larger than " + sizeText(max_bytes));
        }
    }
    ::close(fd);
    return {std::move(text), "", 0, st.st_uid, static_cast<unsigned>(st.st_mode), false};
}

} // namespace nixproc
