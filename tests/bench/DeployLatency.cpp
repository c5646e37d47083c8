// deploy-latency: from the end of a save of processes.nix to the switch starting, over 100 saves,
// with nixproc-init watching (debounce 250 ms). The switch is `testkit stamp`, which records when
// it started; deploy.check is off for the engine's own latency, then on (nix-instantiate --parse)
// for what a default configuration sees.
//   deploy-latency [SAVES]
#include "support/Harness.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

using namespace harness;

namespace {

long long nowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

long long lastStamp(const std::string& file) {
    std::istringstream in(readFile(file));
    long long v = 0;
    for (std::string l; std::getline(in, l);) v = std::stoll(l);
    return v;
}

// Milliseconds after the debounce, per save.
std::vector<double> measure(int saves, bool with_check) {
    TempDir t;
    auto model = t.write("etc/nixproc/processes.nix", "{ v = 0; }\n");
    auto stamps = t / "stamps";
    auto yaml = t.write("init.yaml", "process_manager: sysvinit\nprocesses: " + model + "\nprofile: " + t / "profile" +
                                         "\nstate_dir: " + t / "state" + "\nwatch:\n  debounce_ms: 250\ndeploy:\n  command: [" +
                                         testkit() + ", stamp, " + stamps + "]\n" + (with_check ? "" : "  check: []\n"));
    Child init(inPidNamespace({initBinary(), "-c", yaml}));
    if (!init.expectLog("deploy #1: done", 60s)) throw std::runtime_error("no boot deployment:\n" + init.stderrText());
    std::vector<double> after_debounce;
    for (int i = 1; i <= saves; ++i) {
        { std::ofstream(model, std::ios::trunc) << "{ v = " << i << "; }\n"; }
        long long saved = nowNs();
        if (!init.expectLog("deploy #" + std::to_string(i + 1) + ": done", 60s))
            throw std::runtime_error("save " + std::to_string(i) + " was not deployed");
        after_debounce.push_back(static_cast<double>(lastStamp(stamps) - saved) / 1e6 - 250.0);
    }
    return after_debounce;
}

void report(const char* what, std::vector<double> ms) {
    std::sort(ms.begin(), ms.end());
    auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))]; };
    std::printf("| %s | %zu | %.1f | %.1f | %.1f |\n", what, ms.size(), at(0.5), at(0.99), ms.back());
}

} // namespace

int main(int argc, char** argv) {
    int saves = argc > 1 ? std::atoi(argv[1]) : 100;
    std::printf("| save → switch started, beyond the 250 ms debounce | saves | median ms | p99 ms | max ms |\n|---|---|---|---|---|\n");
    report("deploy.check off (the engine)", measure(saves, false));
    report("deploy.check: nix-instantiate --parse (default)", measure(saves, true));
    return 0;
}
