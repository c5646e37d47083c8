#pragma once
// Runs a program for an integration test: its stdout read line by line (or a pseudo-terminal),
// its stderr collected, its exit awaited through a pidfd. Every wait has a generous deadline so
// a broken init fails the test instead of hanging it, and a wait that ends without what it waited
// for prints, to std::cerr, what it waited for and the program's stderr so far (the init's log):
// a CI log then shows why.
#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace harness {

using namespace std::chrono_literals;

struct Options {
    bool pty = false;            // stdin/stdout/stderr on a new pseudo-terminal (own session)
    std::vector<int> keep_fds;   // descriptors of ours that the program inherits as they are
    // Extra "KEY=VALUE". NIXPROC_INIT_BOOTSTRAP_CHANNEL is empty unless given here (or already set):
    // no test reaches for upstream's channel on the network by default.
    std::vector<std::string> env;
};

class Child {
public:
    Child(const std::vector<std::string>& argv, const Options& options = {});
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }

    // The next line of stdout, or nullopt on EOF or timeout.
    std::optional<std::string> readLine(std::chrono::milliseconds timeout = 30s);
    // Reads (pty or stdout) until `needle` has appeared after the last match; false on timeout.
    bool expect(const std::string& needle, std::chrono::milliseconds timeout = 30s);
    // Reads until `needle` appears in stderr (the init's log); false on timeout.
    bool expectLog(const std::string& needle, std::chrono::milliseconds timeout = 30s);
    // The same, and false as soon as one of `failures` is in stderr without `needle`: a line that
    // says `needle` will not come. For a deployment: expectLog(..., 60s, deployFailures(n)).
    bool expectLog(const std::string& needle, std::chrono::milliseconds timeout, const std::vector<std::string>& failures);
    void send(const std::string& bytes); // to the pty

    // Exit code (128+N when killed by N); throws std::runtime_error on timeout.
    int wait(std::chrono::milliseconds timeout = 60s);
    double secondsToExit() const { return exit_seconds_; }

    const std::string& stderrText() const { return err_; }
    const std::string& outputText() const { return out_; }

private:
    bool pump(std::chrono::milliseconds timeout); // reads what is there; false on timeout
    // To std::cerr: which wait ended without its event, why, and the output that explains it.
    void report(const std::string& wait, const std::string& why, std::size_t stdout_from);
    std::string command_; // for the report
    bool pty_ = false;
    pid_t pid_ = -1;
    int pidfd_ = -1, out_fd_ = -1, err_fd_ = -1;
    std::string out_, err_;
    std::size_t line_pos_ = 0, expect_pos_ = 0;
    std::optional<int> status_;
    std::chrono::steady_clock::time_point started_;
    double exit_seconds_ = 0;
};

const std::string& initBinary();
const std::string& testkit();

// unshare --pid --fork --mount-proc CMD...: CMD becomes PID 1 of a new PID namespace.
std::vector<std::string> inPidNamespace(std::vector<std::string> command);

// inPidNamespace(command), with `source` bind-mounted over `target` first, in the namespace's own
// mount namespace (--mount-proc makes one, with private propagation): the command, still the
// namespace's PID 1 (exec), sees `source` at `target`; the host's `target` is untouched.
std::vector<std::string> inPidNamespaceWithBind(const std::string& source, const std::string& target,
                                                std::vector<std::string> command);

// The pid, seen from outside, of the one process unshare forked (the namespace's PID 1).
pid_t namespaceInit(pid_t unshare_pid);

int count(const std::string& haystack, const std::string& needle);

// The log lines that end deployment n otherwise than "deploy #n: done" (failed, refused, timed
// out, interrupted): what expectLog("deploy #n: done", ...) stops at.
std::vector<std::string> deployFailures(int n);

// A fresh folder under /tmp, removed with everything in it at the end of the test.
struct TempDir {
    std::string path;
    TempDir();
    ~TempDir();
    std::string operator/(const std::string& name) const { return path + "/" + name; }
    // Writes `text` to `name` (creating folders), with `mode`; returns the full path.
    std::string write(const std::string& name, const std::string& text, unsigned mode = 0644) const;
};

// Lines written into a FIFO by processes the test does not start itself (services, rc scripts).
class Fifo {
public:
    explicit Fifo(std::string path);
    ~Fifo();
    std::optional<std::string> readLine(std::chrono::milliseconds timeout = 30s);

private:
    std::string path_, buffer_;
    int fd_ = -1, keep_ = -1;
};

std::string readFile(const std::string& path);

} // namespace harness
