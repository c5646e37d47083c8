#pragma once
// The init's own log: stderr only (stdout belongs to the children), one event per line, as text
// or as one JSON object per line. Children's output is logged through it too (ChildJob logs
// "PREFIX LINE"), so whatever bytes a child writes, the formatters below keep one event on one
// line that cannot move a terminal's cursor, and keep JSON lines valid JSON in valid UTF-8.
#include "config/Config.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace spdlog {
class formatter;
}

namespace nixproc {

// level: trace | debug | info | warn | error (already validated by the configuration).
void setupLogging(const std::string& level, LogFormat format);

// The formatter setupLogging installs, for a logger of one's own (tests capture with it).
std::unique_ptr<spdlog::formatter> makeLogFormatter(LogFormat format);

// One character of UTF-8 text at s[at]: its code point and length in bytes, or length 0 when the
// bytes there are not UTF-8 (a stray or missing continuation byte, an overlong form, a surrogate,
// beyond U+10FFFF, cut short).
struct Utf8Char {
    char32_t code = 0;
    std::size_t length = 0;
};
Utf8Char decodeUtf8(std::string_view s, std::size_t at);

// Characters that change how a line is shown rather than show something: C0 controls (tab and
// newline included), DEL, C1 controls, the line and paragraph separators and the bidirectional
// overrides and isolates (which can make a line read as something it does not say).
bool isDisplayControl(char32_t code);

// For a text log line: valid UTF-8 that is neither a display control passes as it is; controls
// become \t \n \r \a \b \f \v, \xNN (C0, DEL) or \uNNNN (the others); a byte that is not UTF-8
// becomes \xNN. Backslashes stay as they are (paths and regexes stay readable).
std::string visibleText(std::string_view bytes);

// The inside of a JSON string (no quotes) for `bytes`: always valid JSON and valid UTF-8. A byte
// that is not UTF-8 becomes U+FFFD (written \ufffd), as Go's encoding/json and WHATWG decoders do;
// display controls are \uNNNN (or \n \t ...), '"' and '\' are escaped.
std::string jsonStringBody(std::string_view bytes);

} // namespace nixproc
