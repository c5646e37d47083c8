#include "process/CommandPath.hpp"

#include "process/ExitStatus.hpp"

#include <cerrno>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace nixproc {
namespace {

// errno-style verdict on one candidate file: 0 when it can be executed.
int executable(const std::string& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return errno;
    if (S_ISDIR(st.st_mode)) return EACCES;
    if (::access(file.c_str(), X_OK) != 0) return errno;
    return 0;
}

} // namespace

int ResolvedCommand::exitCode() const {
    if (!error) return 0;
    return (error.value() == ENOENT || error.value() == ENOTDIR) ? exit_code::kNotFound
                                                                 : exit_code::kCannotExecute;
}

ResolvedCommand resolveCommand(const std::string& name, const char* path_env) {
    if (name.empty()) return {{}, std::error_code(ENOENT, std::generic_category())};
    if (name.find('/') != std::string::npos) {
        int err = executable(name);
        return {err ? std::string() : name, std::error_code(err, std::generic_category())};
    }
    std::string_view path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
    int first_denial = 0; // like execvp: "permission denied" wins over "not found" if seen
    for (;;) {
        auto colon = path.find(':');
        std::string dir(path.substr(0, colon));
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        int err = executable(candidate);
        if (err == 0) return {candidate, {}};
        if (err != ENOENT && err != ENOTDIR && first_denial == 0) first_denial = err;
        if (colon == std::string_view::npos) break;
        path.remove_prefix(colon + 1);
    }
    return {{}, std::error_code(first_denial ? first_denial : ENOENT, std::generic_category())};
}

} // namespace nixproc
