#include "io/FileWrite.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace nixproc {

std::string writeAll(int fd, std::string_view data, const std::string& shown) {
    for (std::size_t done = 0; done < data.size();) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return shown + ": write: " + std::strerror(errno);
        done += static_cast<std::size_t>(n);
    }
    return "";
}

std::string replaceFile(const std::string& path, std::string_view content) {
    auto why = [](const std::string& file, const char* step) { return file + ": " + step + ": " + std::strerror(errno); };
    std::string tmp = path + ".tmp";
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) return why(tmp, "remove the previous temporary file");
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return why(tmp, "open");
    std::string error = writeAll(fd, content, tmp);
    if (error.empty() && ::fsync(fd) != 0) error = why(tmp, "fsync");
    if (::close(fd) != 0 && error.empty()) error = why(tmp, "close");
    if (error.empty() && ::rename(tmp.c_str(), path.c_str()) != 0) error = why(path, "rename");
    if (!error.empty()) {
        ::unlink(tmp.c_str());
        return error;
    }
    std::string folder = path.substr(0, path.find_last_of('/') + 1);
    int dfd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd); // the rename itself must survive a crash
        ::close(dfd);
    }
    return "";
}

std::string makePrivateFolder(const std::string& prefix) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp == '/' ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    if (!::mkdtemp(pattern.data())) return "";
    return pattern;
}

} // namespace nixproc
