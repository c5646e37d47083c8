#pragma once
// A child the init runs for a purpose (an rc script, an s6-rc step, a deployment): its output is
// logged line by line behind a prefix, it gets SIGTERM when its time is up and SIGKILL after
// that, and the callback learns how it ended once it is reaped, the rest of its process group
// is killed and gone, and its output is drained. Whatever it prints, the job holds a bounded
// amount of it: lines are cut at max_line_bytes, and a check's held output keeps its last lines.
#include "process/Reaper.hpp"
#include "process/Spawner.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace nixproc {

struct JobSpec {
    std::vector<std::string> argv;
    std::vector<std::string> environment; // empty: the init's
    std::string workdir;
    std::string log_prefix;               // "deploy #3 |", "rc S10nginx start |"
    std::chrono::milliseconds timeout{std::chrono::hours(1)};
    std::chrono::milliseconds kill_after{std::chrono::seconds(5)}; // SIGTERM → SIGKILL
    bool output_only_on_failure = false; // a check's output matters only when it fails
    bool output_at_debug = false; // its output is noise unless debugging (the caller reports the result)
    std::size_t max_line_bytes = 64 * 1024; // longer lines are cut there, with a marker
    std::size_t held_lines = 1000;          // output_only_on_failure keeps the last lines only...
    std::size_t held_bytes = 1024 * 1024;   // ...and no more bytes than this (at least one line)
    // A job whose purpose is to start services (an rc script's start, disnix-activate, the switch of
    // a manager that starts them itself): when it succeeds, what it leaves in its group are those
    // services (LFS start_daemon and Dysnomia's `nohup … &` do not always leave the group before
    // the job exits), not leftovers. It still loses its whole group when it fails, times out or
    // is stopped.
    bool keep_group_on_success = false;
    int oom_score_raise = 0; // SpawnRequest::oom_score_raise
};

struct JobResult {
    int exit_code = 0;       // as the init would report it: status, 128+N, 127/126 when not started
    std::string description; // "exited with status 1", "killed by SIGKILL", "not found: ..."
    bool timed_out = false;
    bool started = true;
    int signal = 0;          // the signal that killed it; 0 when it exited
    std::string last_line;   // its last non-blank line of output, for a one-line report
    std::error_code spawn_error; // why it could not be started (started == false): ENOENT, EAGAIN...
    bool ok() const { return started && !timed_out && exit_code == 0; }
};

class ChildJob {
public:
    using Done = std::function<void(const JobResult&)>;

    // Starts the job; `done` runs on the loop, never from inside start().
    static std::shared_ptr<ChildJob> start(boost::asio::io_context& io, const Spawner& spawner, Reaper& reaper,
                                           JobSpec spec, Done done);
    virtual ~ChildJob() = default;

    // SIGTERM to its group now, SIGKILL after kill_after (a shutdown that cannot wait for the job).
    virtual void stop() = 0;
    virtual pid_t pid() const = 0;
};

} // namespace nixproc
