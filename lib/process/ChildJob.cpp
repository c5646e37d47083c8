#include "process/ChildJob.hpp"

#include "process/Children.hpp"
#include "process/ExitStatus.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <csignal>
#include <sys/wait.h>
#include <deque>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <optional>
#include <spdlog/spdlog.h>
#include <string_view>

namespace nixproc {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

// However short kill_after is, SIGKILLed members get this long to die and be reaped.
constexpr milliseconds kMinGroupWait{1000};
// What is still in the pipe once the group is gone is read in one go, up to this much: a daemon
// that left the group but holds the pipe could otherwise keep the loop reading for ever.
constexpr std::size_t kFinalReadLimit = 1024 * 1024;

double seconds(milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

// Splits a byte stream into lines, scanning each byte once. A line longer than `max` bytes is
// cut there (not inside a UTF-8 character) and marked, and the rest of it is skipped up to its
// newline: at most `max` bytes are ever held.
class LineSplitter {
public:
    explicit LineSplitter(std::size_t max)
        : max_(std::max<std::size_t>(max, 1)), marker_(fmt::format(" … [line cut at {} bytes]", max_)) {}

    template <class Emit>
    void feed(std::string_view data, Emit&& emit) {
        while (!data.empty()) {
            auto nl = data.find('\n');
            std::string_view piece = data.substr(0, nl);
            if (skipping_) {
                if (nl == std::string_view::npos) return;
                skipping_ = false;
            } else if (piece.size() > max_ - partial_.size()) {
                cut(piece, emit);
                skipping_ = nl == std::string_view::npos;
            } else if (nl == std::string_view::npos) {
                partial_.append(piece);
                return;
            } else if (partial_.empty()) {
                emit(piece);
            } else {
                partial_.append(piece);
                emit(std::string_view(partial_));
                partial_.clear();
            }
            if (nl == std::string_view::npos) return;
            data.remove_prefix(nl + 1);
        }
    }

    // The last line, when the output did not end with a newline.
    template <class Emit>
    void flush(Emit&& emit) {
        if (!partial_.empty()) emit(std::string_view(partial_));
        partial_.clear();
        skipping_ = false;
    }

private:
    static bool continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

    template <class Emit>
    void cut(std::string_view piece, Emit&& emit) {
        std::size_t room = max_ - partial_.size();
        partial_.append(piece.substr(0, room));
        if (continuation(piece[room])) {
            // The cut falls inside a character: leave it out whole (a character has 4 bytes at most).
            std::size_t i = partial_.size();
            while (i > 0 && partial_.size() - i < 3 && continuation(partial_[i - 1])) --i;
            if (i > 0 && (static_cast<unsigned char>(partial_[i - 1]) & 0xC0) == 0xC0) partial_.resize(i - 1);
        }
        partial_.append(marker_);
        emit(std::string_view(partial_));
        partial_.clear();
    }

    std::size_t max_;
    std::string marker_;
    std::string partial_;
    bool skipping_ = false; // inside a line that was cut
};

// The last lines of a job's output, within a count and a size: the error is usually at the end.
class HeldLines {
public:
    HeldLines(std::size_t max_lines, std::size_t max_bytes) : max_lines_(std::max<std::size_t>(max_lines, 1)), max_bytes_(max_bytes) {}

    void add(std::string_view line) {
        lines_.emplace_back(line);
        bytes_ += line.size();
        // The newest line always stays, even when it alone is over max_bytes.
        while (lines_.size() > 1 && (lines_.size() > max_lines_ || bytes_ > max_bytes_)) {
            bytes_ -= lines_.front().size();
            lines_.pop_front();
            ++dropped_;
        }
    }

    template <class Emit>
    void replay(Emit&& emit) const {
        if (dropped_ > 0) emit(fmt::format("… {} earlier lines not kept", dropped_));
        for (const auto& line : lines_) emit(std::string_view(line));
    }

private:
    std::size_t max_lines_, max_bytes_;
    std::deque<std::string> lines_;
    std::size_t bytes_ = 0, dropped_ = 0;
};

class Job final : public ChildJob, public std::enable_shared_from_this<Job> {
public:
    Job(asio::io_context& io, JobSpec spec, Done done)
        : io_(io), spec_(std::move(spec)), done_(std::move(done)), output_(io), timer_(io),
          lines_(spec_.max_line_bytes), held_(spec_.held_lines, spec_.held_bytes) {}

    void run(const Spawner& spawner, Reaper& reaper) {
        reaper_ = &reaper;
        Spawned child;
        try {
            // Its own group (the Spawner's default, spelt out: ending the job ends the group).
            child = spawner.spawn({.argv = spec_.argv, .environment = spec_.environment, .workdir = spec_.workdir,
                                   .own_process_group = true, .capture_output = true, .oom_score_raise = spec_.oom_score_raise});
        } catch (const SpawnError& e) {
            result_ = {.exit_code = e.exitCode(), .description = "could not start " + std::string(e.what()), .started = false,
                       .spawn_error = e.error()};
            asio::post(io_, [self = shared_from_this()] { self->finish(); });
            return;
        }
        pid_ = child.pid;
        output_.assign(child.output_fd);
        // The Reaper sends SIGKILL to the group before it reaps the leader: its workers must
        // not outlive the step and land after the next one.
        reaper.watch(pid_, [self = shared_from_this()](pid_t, int status) { self->onLeaderExit(status); },
                     spec_.keep_group_on_success ? Reaper::AtExit::KillGroupUnlessSucceeded : Reaper::AtExit::KillGroup);
        readOutput();
        armTimer(spec_.timeout, [this] {
            result_.timed_out = true;
            spdlog::warn("{} still running after {} s: SIGTERM", spec_.log_prefix, seconds(spec_.timeout));
            stop();
        });
    }

    void stop() override {
        if (phase_ != Phase::Running || pid_ < 0 || stopping_) return;
        stopping_ = true;
        reaper_->killGroupAtExit(pid_); // stopped, it leaves no services behind, even exiting 0
        ::kill(-pid_, SIGTERM);
        // A stopped member (kill -STOP, a debugger) would not see the SIGTERM before SIGKILL: as
        // systemd does, continue the group after telling it to end.
        ::kill(-pid_, SIGCONT);
        armTimer(spec_.kill_after, [this] {
            spdlog::warn("{} ignored SIGTERM for {} s: SIGKILL", spec_.log_prefix, seconds(spec_.kill_after));
            ::kill(-pid_, SIGKILL); // the leader is not reaped yet: pid_ is still its group
        });
    }

    pid_t pid() const override { return pid_; }

private:
    enum class Phase {
        Running,   // the leader runs
        Ending,    // the leader is reaped, its group was sent SIGKILL: waiting for it to be empty
        Finishing, // reading what is left of the output
        Finished,  // `done` has run
    };

    void onLeaderExit(int status) {
        result_.exit_code = exitCodeOf(status);
        result_.description = describeStatus(status);
        result_.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        phase_ = Phase::Ending;
        // Its group lives on as the services it started: nothing to wait for.
        if (spec_.keep_group_on_success && result_.exit_code == 0 && !stopping_) return endOutput();
        // The group may still hold members that were just sent SIGKILL, and zombies. Once their
        // parents are gone they are re-parented to us (PID 1 or subreaper) and reaped as orphans:
        // each drain tells whether the group is empty. Members that left the group with setsid
        // (daemons started by an rc script through start-stop-daemon) are in no group of ours:
        // neither killed nor waited for.
        reaper_->watchGroup(pid_, [self = shared_from_this()] { self->endOutput(); });
        // What we cannot reap bounds the wait: a zombie whose parent left the group and never
        // reaps it, a process in uninterruptible sleep, a member that is not our descendant.
        armTimer(std::max(spec_.kill_after, kMinGroupWait), [this] {
            reaper_->unwatchGroup(pid_);
            auto members = membersOfGroup(pid_);
            if (!members.empty()) {
                std::vector<std::string> who;
                for (const auto& m : members) who.push_back(describe(m));
                spdlog::warn("{} {} process(es) of its group outlived SIGKILL for {} s, going on without them: {}",
                             spec_.log_prefix, members.size(), seconds(std::max(spec_.kill_after, kMinGroupWait)),
                             fmt::join(who, ", "));
            }
            endOutput();
        });
    }

    void armTimer(milliseconds after, std::function<void()> then) {
        // A completion already queued when the timer is re-armed or cancelled still runs: the
        // generation tells it that it is stale.
        unsigned generation = ++timer_generation_;
        timer_.expires_after(after);
        timer_.async_wait([self = shared_from_this(), generation, then = std::move(then)](const boost::system::error_code& ec) {
            if (!ec && generation == self->timer_generation_) then();
        });
    }

    void disarmTimer() {
        ++timer_generation_;
        timer_.cancel();
    }

    void readOutput() {
        reading_ = true;
        output_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
            self->reading_ = false;
            self->take(n);
            if (self->phase_ == Phase::Finishing) return self->closeOutputAndFinish();
            if (!ec) self->readOutput();
            // EOF: nothing holds the pipe any more. The group's end still decides when it is done.
        });
    }

    void take(std::size_t n) {
        lines_.feed(std::string_view(chunk_.data(), n), [this](std::string_view line) { logLine(line); });
    }

    void logLine(std::string_view line) {
        if (line.find_first_not_of(" \t\r") != std::string_view::npos) result_.last_line = line;
        if (spec_.output_at_debug) spdlog::debug("{} {}", spec_.log_prefix, line);
        else if (spec_.output_only_on_failure) held_.add(line);
        else spdlog::info("{} {}", spec_.log_prefix, line);
    }

    // The group is gone (or given up on). A read in flight completes first, with its bytes, and
    // then takes the rest: output is never read out of order or twice.
    void endOutput() {
        if (phase_ != Phase::Ending) return;
        phase_ = Phase::Finishing;
        disarmTimer();
        if (!reading_) return closeOutputAndFinish();
        boost::system::error_code ec;
        output_.cancel(ec);
    }

    // What the group wrote before it ended is in the pipe: take it now rather than wait for an
    // EOF that a daemon it started (holding the pipe) may never give.
    void closeOutputAndFinish() {
        boost::system::error_code ec;
        output_.non_blocking(true, ec);
        for (std::size_t total = 0; !ec && total < kFinalReadLimit;) {
            std::size_t n = output_.read_some(asio::buffer(chunk_), ec);
            take(n);
            total += n;
        }
        lines_.flush([this](std::string_view line) { logLine(line); });
        output_.close(ec);
        finish();
    }

    void finish() {
        if (phase_ == Phase::Finished) return;
        phase_ = Phase::Finished;
        disarmTimer();
        if (!result_.ok()) held_.replay([this](std::string_view line) { spdlog::info("{} {}", spec_.log_prefix, line); });
        if (done_) std::exchange(done_, nullptr)(result_);
    }

    asio::io_context& io_;
    JobSpec spec_;
    Done done_;
    Reaper* reaper_ = nullptr;
    asio::posix::stream_descriptor output_;
    asio::steady_timer timer_;
    unsigned timer_generation_ = 0;
    std::array<char, 64 * 1024> chunk_{}; // a pipe's default capacity
    LineSplitter lines_;
    HeldLines held_; // output_only_on_failure: shown if it fails
    pid_t pid_ = -1;
    Phase phase_ = Phase::Running;
    bool stopping_ = false; // SIGTERM sent
    bool reading_ = false;  // a read is in flight
    JobResult result_;
};

} // namespace

std::shared_ptr<ChildJob> ChildJob::start(asio::io_context& io, const Spawner& spawner, Reaper& reaper, JobSpec spec, Done done) {
    auto job = std::make_shared<Job>(io, std::move(spec), std::move(done));
    job->run(spawner, reaper);
    return job;
}

} // namespace nixproc
