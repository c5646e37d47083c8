#pragma once
// execvp's PATH search, done in the parent so that "not found" (127) and "not executable" (126)
// are known before anything is forked.
#include <string>
#include <system_error>

namespace nixproc {

struct ResolvedCommand {
    std::string path;     // what to execve; empty when not found
    std::error_code error; // ENOENT: nothing by that name; EACCES etc.: found but not executable

    int exitCode() const; // 127 or 126, as a shell would exit
};

// `name` with a '/' is taken as it is; otherwise each PATH entry is tried in order, as execvp
// does (an empty entry means the current folder; an unset PATH means /usr/local/bin:/usr/bin:/bin).
ResolvedCommand resolveCommand(const std::string& name, const char* path_env);

} // namespace nixproc
