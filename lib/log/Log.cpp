#include "log/Log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace nixproc {
namespace {

// {"time":"2026-11-26T01:02:03.456Z","level":"info","msg":"..."}: the message is escaped, which
// a pattern cannot do.
class JsonFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
        std::time_t secs = static_cast<std::time_t>(ms / 1000);
        std::tm tm{};
        ::gmtime_r(&secs, &tm);
        char time[32];
        std::strftime(time, sizeof time, "%Y-%m-%dT%H:%M:%S", &tm);
        auto level = spdlog::level::to_string_view(msg.level);
        fmt::format_to(std::back_inserter(dest), R"({{"time":"{}.{:03}Z","level":"{}","msg":")", time, ms % 1000,
                       std::string_view(level.data(), level.size()));
        for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
            switch (c) {
            case '"': dest.append(std::string_view("\\\"")); break;
            case '\\': dest.append(std::string_view("\\\\")); break;
            case '\n': dest.append(std::string_view("\\n")); break;
            case '\t': dest.append(std::string_view("\\t")); break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) fmt::format_to(std::back_inserter(dest), "\\u{:04x}", c);
                else dest.push_back(c);
            }
        }
        dest.append(std::string_view("\"}\n"));
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

} // namespace

void setupLogging(const std::string& level, LogFormat format) {
    auto logger = std::make_shared<spdlog::logger>("nixproc-init", std::make_shared<spdlog::sinks::stderr_sink_st>());
    if (format == LogFormat::Json) logger->set_formatter(std::make_unique<JsonFormatter>());
    else logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e nixproc-init %l: %v");
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::trace); // docker logs must see each line at once
    spdlog::set_default_logger(logger);
}

} // namespace nixproc
