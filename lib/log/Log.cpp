#include "log/Log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace nixproc {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void appendByteEscape(std::string& out, unsigned char byte) {
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
}

void appendCodeEscape(std::string& out, char32_t code) { // \uNNNN: every display control is in the BMP
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(code >> shift) & 15];
}

// \t \n \r \b \f: the same in text and in JSON.
const char* shortEscape(char32_t code) {
    switch (code) {
    case '\t': return "\\t";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default: return nullptr;
    }
}

std::string_view payloadOf(const spdlog::details::log_msg& msg) { return {msg.payload.data(), msg.payload.size()}; }

void append(spdlog::memory_buf_t& dest, std::string_view text) { dest.append(text.data(), text.data() + text.size()); }

// %* in the text pattern: the message as visibleText.
class VisibleMessage final : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
        append(dest, visibleText(payloadOf(msg)));
    }
    std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<VisibleMessage>(); }
};

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
        append(dest, jsonStringBody(payloadOf(msg)));
        append(dest, "\"}\n");
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

} // namespace

Utf8Char decodeUtf8(std::string_view s, std::size_t at) {
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    unsigned char lead = byte(at);
    if (lead < 0x80) return {lead, 1};
    std::size_t length = lead > 0xf4 ? 0 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 0;
    if (length == 0 || at + length > s.size()) return {}; // a stray continuation byte, or cut short
    char32_t code = lead & (0x7f >> length);
    for (std::size_t i = 1; i < length; ++i) {
        if ((byte(at + i) & 0xc0) != 0x80) return {};
        code = (code << 6) | (byte(at + i) & 0x3f);
    }
    constexpr char32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kSmallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return {};
    return {code, length};
}

bool isDisplayControl(char32_t code) {
    return code < 0x20 || (code >= 0x7f && code <= 0x9f) || code == 0x061c || code == 0x200e || code == 0x200f ||
           (code >= 0x2028 && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);
}

std::string visibleText(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (std::size_t i = 0; i < bytes.size();) {
        Utf8Char c = decodeUtf8(bytes, i);
        if (c.length == 0) {
            appendByteEscape(out, static_cast<unsigned char>(bytes[i]));
            i += 1;
            continue;
        }
        if (!isDisplayControl(c.code)) out.append(bytes.substr(i, c.length));
        else if (const char* e = shortEscape(c.code)) out += e;
        else if (c.code == '\a') out += "\\a";
        else if (c.code == '\v') out += "\\v";
        else if (c.code < 0x80) appendByteEscape(out, static_cast<unsigned char>(c.code));
        else appendCodeEscape(out, c.code);
        i += c.length;
    }
    return out;
}

std::string jsonStringBody(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() + 8);
    for (std::size_t i = 0; i < bytes.size();) {
        Utf8Char c = decodeUtf8(bytes, i);
        if (c.length == 0) {
            out += "\\ufffd";
            i += 1;
            continue;
        }
        if (c.code == '"') out += "\\\"";
        else if (c.code == '\\') out += "\\\\";
        else if (!isDisplayControl(c.code)) out.append(bytes.substr(i, c.length));
        else if (const char* e = shortEscape(c.code)) out += e;
        else appendCodeEscape(out, c.code);
        i += c.length;
    }
    return out;
}

std::unique_ptr<spdlog::formatter> makeLogFormatter(LogFormat format) {
    if (format == LogFormat::Json) return std::make_unique<JsonFormatter>();
    auto text = std::make_unique<spdlog::pattern_formatter>();
    text->add_flag<VisibleMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e nixproc-init %l: %*");
    return text;
}

void setupLogging(const std::string& level, LogFormat format) {
    auto logger = std::make_shared<spdlog::logger>("nixproc-init", std::make_shared<spdlog::sinks::stderr_sink_st>());
    logger->set_formatter(makeLogFormatter(format));
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::trace); // docker logs must see each line at once
    spdlog::set_default_logger(logger);
}

} // namespace nixproc
