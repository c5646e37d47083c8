// The main of every Catch2 test program (the catch-main library). Catch2's defaults let two
// mistakes pass: a run whose filter matches no test case ("No tests ran", exit 0; each half of a
// name that catch_discover_tests split at ';') and a test case, or leaf section, that runs no
// assertion. Both fail here, always: for every ctest entry, whoever registered it, and by hand.
// (Catch2 2.13 takes `--warn` only once on a command line, so ctest's EXTRA_ARGS cannot turn on
// both.)
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
    Catch::Session session;
    if (int error = session.applyCommandLine(argc, argv)) return error;
    auto& config = session.configData();
    config.warnings = static_cast<Catch::WarnAbout::What>(config.warnings | Catch::WarnAbout::NoTests |
                                                          Catch::WarnAbout::NoAssertions);
    return session.run();
}
