#include "io/PathTrust.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

namespace nixproc {
namespace {

bool trustedOwner(unsigned uid) { return uid == 0 || uid == ::geteuid(); }

// Nobody writes into a read-only mount, whatever its mode says: the kubelet mounts a ConfigMap
// volume read-only with its root 0777 (1777 with the sticky bit).
bool onReadOnlyMount(const std::string& path) {
    struct statvfs fs {};
    return ::statvfs(path.c_str(), &fs) == 0 && (fs.f_flag & ST_RDONLY);
}

std::string modeText(unsigned mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", mode & 07777);
    return text;
}

// "/", "/etc", "/etc/nixproc" for "/etc/nixproc" (lexically; "." and ".." are left as they are,
// which is safe: each is looked at as it is on disk).
std::vector<std::string> prefixes(const std::string& path) {
    std::vector<std::string> out{"/"};
    for (std::size_t at = 1; at <= path.size(); ++at) {
        if (at == path.size() || path[at] == '/') {
            std::string p = path.substr(0, at);
            if (p.size() > 1 && p.back() != '/' && p != out.back()) out.push_back(p);
        }
    }
    return out;
}

} // namespace

std::string untrustedOwnerOrMode(const std::string& what, unsigned owner, unsigned mode) {
    if (!trustedOwner(owner))
        return what + " is owned by uid " + std::to_string(owner) + ", not by root or uid " +
               std::to_string(::geteuid()) + " that runs the switch";
    if (!S_ISLNK(mode) && (mode & (S_IWGRP | S_IWOTH)))
        return what + " is writable by " + ((mode & S_IWOTH) ? "others" : "its group") + " (mode " + modeText(mode) + ")";
    return "";
}

std::string untrustedPath(const std::string& path) {
    if (path.empty() || path.front() != '/') return path + " is not an absolute path";
    auto chain = prefixes(path);
    for (std::size_t i = 0; i < chain.size(); ++i) {
        struct stat st {};
        if (::lstat(chain[i].c_str(), &st) != 0) {
            if (errno == ENOENT) return ""; // not there (yet): nothing below it to replace
            return chain[i] + ": " + std::strerror(errno);
        }
        bool last = i + 1 == chain.size();
        std::string what = (S_ISDIR(st.st_mode) ? "the folder " : "") + chain[i];
        if (!trustedOwner(st.st_uid)) return untrustedOwnerOrMode(what, st.st_uid, st.st_mode);
        // A sticky world-writable folder (/tmp) lets nobody else rename the trusted entry below it
        // (checked next), so it is only refused as the last component.
        if (S_ISDIR(st.st_mode) && (st.st_mode & (S_IWGRP | S_IWOTH)) && !onReadOnlyMount(chain[i])) {
            bool sticky = st.st_mode & S_ISVTX;
            if (last || !sticky) return untrustedOwnerOrMode(what, st.st_uid, st.st_mode);
        }
    }
    return "";
}

} // namespace nixproc
