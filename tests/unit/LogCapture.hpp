#pragma once
// The init's log lines written while it lives, for unit tests that check what code logs: the
// default spdlog logger is replaced and put back. It keeps the last 2,000 lines (a test of bounded
// output writes millions) and counts them all.
#include <deque>
#include <memory>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <string>

class LogCapture {
public:
    LogCapture() : previous_(spdlog::default_logger()), sink_(std::make_shared<Sink>()) {
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink_));
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    std::size_t count() const { return sink_->count; }
    const std::deque<std::string>& last() const { return sink_->lines; }
    bool contains(const std::string& needle) const {
        for (const auto& l : sink_->lines)
            if (l.find(needle) != std::string::npos) return true;
        return false;
    }
    // The kept lines, one a line.
    std::string text() const { return join(spdlog::level::trace); }
    // Those at warn and above.
    std::string warnings() const { return join(spdlog::level::warn); }

private:
    struct Sink : spdlog::sinks::base_sink<spdlog::details::null_mutex> {
        std::size_t count = 0;
        std::deque<std::string> lines;
        std::deque<spdlog::level::level_enum> levels;
        void sink_it_(const spdlog::details::log_msg& msg) override {
            ++count;
            lines.emplace_back(msg.payload.data(), msg.payload.size());
            levels.push_back(msg.level);
            if (lines.size() > 2000) {
                lines.pop_front();
                levels.pop_front();
            }
        }
        void flush_() override {}
    };
    std::string join(spdlog::level::level_enum at_least) const {
        std::string all;
        for (std::size_t i = 0; i < sink_->lines.size(); ++i)
            if (sink_->levels[i] >= at_least) all += sink_->lines[i] + "\n";
        return all;
    }
    std::shared_ptr<spdlog::logger> previous_;
    std::shared_ptr<Sink> sink_;
};
