// The init's log as a terminal or a log collector sees it: whatever bytes a child writes (ChildJob
// logs each of its lines through spdlog::info("{} {}", prefix, line)), one event is one line that
// cannot move the cursor, and a JSON line is valid JSON in valid UTF-8.
#include "log/Log.hpp"

#include <boost/json.hpp> // the parser that judges the JSON lines (compiled once, in lib/control/Protocol.cpp)
#include <catch2/catch.hpp>
#include <cerrno>
#include <fcntl.h>
#include <regex>
#include <spdlog/spdlog.h>
#include <unistd.h>

using namespace nixproc;

namespace {

// Points stderr (fd 2, where the init's logger writes) into a pipe while it lives.
class StderrCapture {
public:
    StderrCapture() {
        REQUIRE(::pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) == 0);
        REQUIRE(::fcntl(pipe_[1], F_SETPIPE_SZ, 1 << 20) >= 0); // a full pipe would drop lines (lost lines fail the tests)
        saved_ = ::dup(STDERR_FILENO);
        REQUIRE(saved_ >= 0);
        REQUIRE(::dup2(pipe_[1], STDERR_FILENO) == STDERR_FILENO);
    }
    ~StderrCapture() {
        restore();
        ::close(pipe_[0]);
        setupLogging("info", LogFormat::Text); // the next test gets the logger main() starts with
    }
    // Everything written so far; stderr is back to what it was.
    std::string take() {
        std::fflush(stderr);
        restore();
        std::string out;
        char buf[4096];
        for (ssize_t n; (n = ::read(pipe_[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
        return out;
    }

private:
    void restore() {
        if (saved_ < 0) return;
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_);
        ::close(pipe_[1]);
        saved_ = -1;
    }
    int pipe_[2] = {-1, -1};
    int saved_ = -1;
};

// What a child's line becomes in the init's log, through the same call ChildJob makes.
std::string logged(LogFormat format, const std::string& child_line) {
    StderrCapture capture;
    setupLogging("info", format);
    spdlog::info("{} {}", "deploy #1 |", child_line);
    return capture.take();
}

// The message of a text line, without "TIME nixproc-init info: ".
std::string textMessage(const std::string& line) {
    static const std::regex prefix(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} nixproc-init info: )");
    std::smatch m;
    REQUIRE(std::regex_search(line, m, prefix));
    return m.suffix();
}

bool hasRawControl(const std::string& line) {
    for (std::size_t i = 0; i + 1 < line.size(); ++i) { // the last byte is the line's own '\n'
        auto b = static_cast<unsigned char>(line[i]);
        if (b < 0x20 || b == 0x7f) return true;
        if (b == 0xc2 && static_cast<unsigned char>(line[i + 1]) >= 0x80 && static_cast<unsigned char>(line[i + 1]) <= 0x9f)
            return true; // C1 in UTF-8
    }
    return false;
}

// RFC 3629's table of well-formed sequences, written apart from the decoder under test.
bool isUtf8(const std::string& s) {
    auto in = [&](std::size_t i, int lo, int hi) {
        return i < s.size() && static_cast<unsigned char>(s[i]) >= lo && static_cast<unsigned char>(s[i]) <= hi;
    };
    for (std::size_t i = 0; i < s.size();) {
        if (in(i, 0x00, 0x7f)) i += 1;
        else if (in(i, 0xc2, 0xdf) && in(i + 1, 0x80, 0xbf)) i += 2;
        else if (in(i, 0xe0, 0xe0) && in(i + 1, 0xa0, 0xbf) && in(i + 2, 0x80, 0xbf)) i += 3;
        else if ((in(i, 0xe1, 0xec) || in(i, 0xee, 0xef)) && in(i + 1, 0x80, 0xbf) && in(i + 2, 0x80, 0xbf)) i += 3;
        else if (in(i, 0xed, 0xed) && in(i + 1, 0x80, 0x9f) && in(i + 2, 0x80, 0xbf)) i += 3;
        else if (in(i, 0xf0, 0xf0) && in(i + 1, 0x90, 0xbf) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf)) i += 4;
        else if (in(i, 0xf1, 0xf3) && in(i + 1, 0x80, 0xbf) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf)) i += 4;
        else if (in(i, 0xf4, 0xf4) && in(i + 1, 0x80, 0x8f) && in(i + 2, 0x80, 0xbf) && in(i + 3, 0x80, 0xbf)) i += 4;
        else return false;
    }
    return true;
}

// The "msg" of a JSON line, after checking the line is exactly one JSON object in valid UTF-8.
std::string jsonMessage(const std::string& line) {
    REQUIRE(line.ends_with("\n"));
    REQUIRE(std::count(line.begin(), line.end(), '\n') == 1);
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(line, ec); // rejects invalid UTF-8 and raw controls
    INFO(line);
    REQUIRE(!ec);
    REQUIRE(v.is_object());
    return std::string(v.at("msg").as_string());
}

} // namespace

TEST_CASE("text log: a child's carriage return, escape sequence or bell cannot forge a line", "[log]") {
    std::string line = logged(LogFormat::Text, "building\r2026-01-01T00:00:00.000 nixproc-init info: deploy #9: done\x1b[2K\a");
    CHECK(std::count(line.begin(), line.end(), '\n') == 1);
    CHECK_FALSE(hasRawControl(line));
    CHECK(textMessage(line) == "deploy #1 | building\\r2026-01-01T00:00:00.000 nixproc-init info: deploy #9: done\\x1b[2K\\a\n");
}

TEST_CASE("text log: a newline inside one event stays on the event's line", "[log]") {
    std::string line = logged(LogFormat::Text, "one\ntwo\r\n");
    CHECK(std::count(line.begin(), line.end(), '\n') == 1);
    CHECK(textMessage(line) == "deploy #1 | one\\ntwo\\r\\n\n");
}

TEST_CASE("text log: every C0 control, DEL, C1 control and stray byte is shown, text is kept", "[log]") {
    CHECK(visibleText("\t\n\r\a\b\f\v") == "\\t\\n\\r\\a\\b\\f\\v");
    CHECK(visibleText(std::string("\0\x01\x1b\x1f\x7f", 5)) == "\\x00\\x01\\x1b\\x1f\\x7f");
    CHECK(visibleText("\xc2\x9b" "31m\xc2\x85") == "\\u009b31m\\u0085");  // CSI and NEL as UTF-8
    CHECK(visibleText("\x9b" "31m\xff\xc3") == "\\x9b31m\\xff\\xc3");       // bytes that are not UTF-8
    CHECK(visibleText("\xe2\x80\xae" "txt.exe\xe2\x80\xa8") == "\\u202etxt.exe\\u2028"); // bidi override, line separator
    CHECK(visibleText("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80 C:\\path \\x41") ==
          "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80 C:\\path \\x41");
    CHECK(visibleText("\xed\xa0\x80\xc0\xaf\xf8\x88\x80\x80\x80") == "\\xed\\xa0\\x80\\xc0\\xaf\\xf8\\x88\\x80\\x80\\x80");
    for (int b = 0; b < 256; ++b) { // any single byte: no raw control comes out, and the result is UTF-8
        std::string out = visibleText(std::string(1, static_cast<char>(b))) + "\n";
        INFO(b);
        CHECK_FALSE(hasRawControl(out));
        CHECK(isUtf8(out));
    }
}

TEST_CASE("json log: every line is one valid JSON object in valid UTF-8, whatever the child wrote", "[log]") {
    const std::string nul(1, '\0');
    const std::string controls = "quote\" back\\slash " + nul + " nul \x1b[31m red\r\n bell\a del\x7f c1\xc2\x9b";
    std::string line = logged(LogFormat::Json, controls + " stray\x9b\xff cut\xc3 overlong\xc0\xaf surrogate\xed\xa0\x80 ok\xc3\xa9\xf0\x9f\x9a\x80");
    CHECK(isUtf8(line));
    CHECK_FALSE(hasRawControl(line));
    // Controls come back as they were; each byte that is not UTF-8 is one U+FFFD.
    const std::string fffd = "\xef\xbf\xbd";
    CHECK(jsonMessage(line) == "deploy #1 | " + controls + " stray" + fffd + fffd + " cut" + fffd + " overlong" + fffd + fffd +
                                   " surrogate" + fffd + fffd + fffd + " ok\xc3\xa9\xf0\x9f\x9a\x80");
}

TEST_CASE("json log: any single byte or byte pair gives a valid line", "[log]") {
    StderrCapture capture;
    setupLogging("info", LogFormat::Json);
    for (int a = 0; a < 256; ++a)
        for (int b : {-1, 0x00, 0x0a, 0x22, 0x5c, 0x80, 0xa0, 0xbf, 0xc3, 0xff})
            spdlog::info("{}", b < 0 ? std::string(1, static_cast<char>(a)) : std::string{static_cast<char>(a), static_cast<char>(b)});
    std::string all = capture.take();
    std::size_t lines = 0;
    for (std::size_t start = 0, end; (end = all.find('\n', start)) != std::string::npos; start = end + 1, ++lines) {
        std::string line = all.substr(start, end - start + 1);
        CHECK(isUtf8(line));
        CHECK_FALSE(hasRawControl(line));
        boost::json::error_code ec;
        boost::json::parse(line, ec);
        INFO(line);
        CHECK(!ec);
    }
    CHECK(lines == 256 * 10);
}

TEST_CASE("the text line keeps its layout: time, the init's name, the level, the message", "[log]") {
    std::string line = logged(LogFormat::Text, "hello");
    CHECK(std::regex_match(line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} nixproc-init info: deploy #1 \| hello\n)")));
    std::string json = logged(LogFormat::Json, "hello");
    CHECK(std::regex_match(json, std::regex(R"(\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","level":"info","msg":"deploy #1 \| hello"\}\n)")));
}
