#include "process/ChildJob.hpp"

#include "process/ExitStatus.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <csignal>
#include <optional>
#include <spdlog/spdlog.h>

namespace nixproc {
namespace {

namespace asio = boost::asio;

class Job final : public ChildJob, public std::enable_shared_from_this<Job> {
public:
    Job(asio::io_context& io, JobSpec spec, Done done)
        : io_(io), spec_(std::move(spec)), done_(std::move(done)), output_(io), timer_(io) {}

    void run(const Spawner& spawner, Reaper& reaper) {
        Spawned child;
        try {
            child = spawner.spawn({.argv = spec_.argv, .environment = spec_.environment, .workdir = spec_.workdir,
                                   .capture_output = true});
        } catch (const SpawnError& e) {
            result_ = {.exit_code = e.exitCode(), .description = e.what(), .started = false};
            asio::post(io_, [self = shared_from_this()] { self->finish(); });
            return;
        }
        pid_ = child.pid;
        output_.assign(child.output_fd);
        auto self = shared_from_this();
        reaper.watch(pid_, [self](pid_t, int status) {
            self->status_ = status;
            self->drainOutput();
            self->result_.exit_code = exitCodeOf(status);
            self->result_.description = describeStatus(status);
            self->finish();
        });
        readOutput();
        armTimer(spec_.timeout, [this] {
            result_.timed_out = true;
            spdlog::warn("{} still running after {} s: SIGTERM", spec_.log_prefix, spec_.timeout.count() / 1000.0);
            stop();
        });
    }

    void stop() override {
        if (status_ || pid_ < 0) return;
        ::kill(-pid_, SIGTERM);
        armTimer(spec_.kill_after, [this] {
            spdlog::warn("{} ignored SIGTERM for {} s: SIGKILL", spec_.log_prefix, spec_.kill_after.count() / 1000.0);
            ::kill(-pid_, SIGKILL);
        });
    }

    pid_t pid() const override { return pid_; }

private:
    void armTimer(std::chrono::milliseconds after, std::function<void()> then) {
        timer_.expires_after(after);
        timer_.async_wait([self = shared_from_this(), then = std::move(then)](const boost::system::error_code& ec) {
            if (!ec && !self->status_) then();
        });
    }

    void readOutput() {
        output_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
            self->pending_.append(self->chunk_.data(), n);
            if (ec) return; // EOF, or closed by drainOutput
            self->logLines(false);
            self->readOutput();
        });
    }

    void logLines(bool flush_rest) {
        std::size_t start = 0;
        for (auto nl = pending_.find('\n'); nl != std::string::npos; nl = pending_.find('\n', start)) {
            logLine(pending_.substr(start, nl - start));
            start = nl + 1;
        }
        pending_.erase(0, start);
        if (flush_rest && !pending_.empty()) {
            logLine(pending_);
            pending_.clear();
        }
    }

    void logLine(std::string line) {
        if (spec_.output_only_on_failure) held_.push_back(std::move(line));
        else spdlog::info("{} {}", spec_.log_prefix, line);
    }

    // Once the child is gone, what it wrote is in the pipe: take it now rather than wait for an
    // EOF that a daemon it started (holding the pipe) may never give.
    void drainOutput() {
        boost::system::error_code ec;
        output_.non_blocking(true, ec);
        while (!ec) {
            std::size_t n = output_.read_some(asio::buffer(chunk_), ec);
            pending_.append(chunk_.data(), n);
        }
        logLines(true);
        output_.close(ec);
    }

    void finish() {
        timer_.cancel();
        if (!result_.ok())
            for (const auto& line : held_) spdlog::info("{} {}", spec_.log_prefix, line);
        if (done_) std::exchange(done_, nullptr)(result_);
    }

    asio::io_context& io_;
    JobSpec spec_;
    Done done_;
    asio::posix::stream_descriptor output_;
    asio::steady_timer timer_;
    std::array<char, 4096> chunk_{};
    std::string pending_;
    std::vector<std::string> held_; // output_only_on_failure: shown if it fails
    pid_t pid_ = -1;
    std::optional<int> status_;
    JobResult result_;
};

} // namespace

std::shared_ptr<ChildJob> ChildJob::start(asio::io_context& io, const Spawner& spawner, Reaper& reaper, JobSpec spec, Done done) {
    auto job = std::make_shared<Job>(io, std::move(spec), std::move(done));
    job->run(spawner, reaper);
    return job;
}

} // namespace nixproc
