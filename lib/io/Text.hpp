#pragma once
// Reading configuration and script text line by line (supervisord.conf, /etc/hosts, an image's Cmd
// script): one definition of a line and of the blanks around it.
#include <string_view>

namespace nixproc {

// `s` without the blanks around it: those Python's str.strip() removes (space, \t, \n, \v, \f, \r),
// as supervisord's configparser strips its keys and values.
inline std::string_view trimBlanks(std::string_view s) {
    constexpr std::string_view blanks = " \t\n\v\f\r";
    auto b = s.find_first_not_of(blanks), e = s.find_last_not_of(blanks);
    return b == std::string_view::npos ? std::string_view() : s.substr(b, e - b + 1);
}

// Calls `f(line)` for each line of `text`, without its '\n' (a last line without one counts too).
template <class F>
void forEachLine(std::string_view text, F&& f) {
    while (!text.empty()) {
        auto nl = text.find('\n');
        f(text.substr(0, nl));
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    }
}

} // namespace nixproc
