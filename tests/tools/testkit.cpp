// testkit: the small programs the integration tests run under nixproc-init, in one binary.
//   testkit orphans N            leave N orphans to the init, wait until none is a zombie
//   testkit sigstate             print SigBlk and SigIgn of this process
//   testkit with-signals [--block L] [--ignore L] -- CMD...   exec CMD with that signal state
//   testkit fds                  print the open file descriptors
//   testkit catch-all            print "ready", then "got N" and exit 128+N on the first signal
//   testkit ignore-term          ignore SIGTERM, print "ready", wait forever
//   testkit stubborn [FIFO]      print "ready" (to FIFO too), then "got N" for each TERM/INT/HUP/QUIT, never exit
//   testkit stamp FILE           append the time it started (ns since the epoch) to FILE
//   testkit orphan-parent        print "orphan-ppid P": the pid an orphaned grandchild is given to
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "testkit: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(99);
}

void say(const std::string& line) {
    std::string l = line + "\n";
    if (::write(STDOUT_FILENO, l.data(), l.size()) < 0) die("write");
}

int countZombies() {
    int zombies = 0;
    DIR* proc = ::opendir("/proc");
    while (dirent* e = ::readdir(proc)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
        std::string line;
        if (!std::getline(stat, line)) continue;
        auto close = line.rfind(')');
        if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') ++zombies;
    }
    ::closedir(proc);
    return zombies;
}

// Each orphan is a grandchild that lives until its parent has exited (EOF on a pipe only the
// parent holds), so it is re-parented to the init before it dies.
int orphans(int n) {
    for (int i = 0; i < n; ++i) {
        pid_t middle = ::fork();
        if (middle < 0) die("fork");
        if (middle == 0) {
            int p[2];
            if (::pipe(p) != 0) die("pipe");
            pid_t grandchild = ::fork();
            if (grandchild == 0) {
                ::close(p[1]);
                char c;
                while (::read(p[0], &c, 1) > 0) {}
                ::_exit(0);
            }
            ::_exit(0);
        }
        int status;
        ::waitpid(middle, &status, 0);
    }
    // No event tells us the init has reaped them: look, generously bounded.
    for (int tries = 0; tries < 6000; ++tries) {
        int z = countZombies();
        if (z == 0) {
            say("orphans " + std::to_string(n) + " left, zombies 0");
            return 0;
        }
        timespec ts{0, 10'000'000};
        ::nanosleep(&ts, nullptr);
    }
    say("zombies " + std::to_string(countZombies()));
    return 1;
}

int sigstate() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.starts_with("SigBlk:") || line.starts_with("SigIgn:")) say(line);
    return 0;
}

std::vector<int> signalList(const std::string& list) {
    std::vector<int> sigs;
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ','))
        sigs.push_back(item.starts_with("RTMIN+") ? SIGRTMIN + std::atoi(item.c_str() + 6) : std::atoi(item.c_str()));
    return sigs;
}

int withSignals(int argc, char** argv) {
    sigset_t block;
    sigemptyset(&block);
    int i = 2;
    for (; i + 1 < argc && std::strcmp(argv[i], "--") != 0; i += 2) {
        for (int sig : signalList(argv[i + 1])) {
            if (std::strcmp(argv[i], "--block") == 0) sigaddset(&block, sig);
            else std::signal(sig, SIG_IGN);
        }
    }
    if (i >= argc || std::strcmp(argv[i], "--") != 0) die("with-signals: missing --");
    ::sigprocmask(SIG_SETMASK, &block, nullptr);
    ::execvp(argv[i + 1], argv + i + 1);
    die(std::string("exec ") + argv[i + 1]);
}

int fds() {
    std::string out;
    DIR* dir = ::opendir("/proc/self/fd");
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.' || std::atoi(e->d_name) == ::dirfd(dir)) continue;
        out += (out.empty() ? "" : " ") + std::string(e->d_name);
    }
    ::closedir(dir);
    say("fds " + out);
    return 0;
}

void reportAndExit(int sig) {
    char line[32];
    int len = std::snprintf(line, sizeof line, "got %d\n", sig);
    if (::write(STDOUT_FILENO, line, static_cast<size_t>(len)) < 0) ::_exit(98);
    ::_exit(128 + sig);
}

int catchAll() {
    for (int sig = 1; sig <= SIGRTMAX; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD) continue;
        struct sigaction sa {};
        sa.sa_handler = reportAndExit;
        sigfillset(&sa.sa_mask); // the first signal is the one reported, whatever follows it
        ::sigaction(sig, &sa, nullptr);
    }
    say("ready");
    for (;;) ::pause();
}

void reportAndGoOn(int sig) {
    char line[32];
    int len = std::snprintf(line, sizeof line, "got %d\n", sig);
    if (::write(STDOUT_FILENO, line, static_cast<size_t>(len)) < 0) ::_exit(98);
}

// Reports every TERM, INT, HUP and QUIT and carries on: only SIGKILL ends it. With a path, "ready"
// is also written there (a FIFO the test reads) once the handlers are in place.
int stubborn(const char* ready_path) {
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT}) {
        struct sigaction sa {};
        sa.sa_handler = reportAndGoOn;
        sigfillset(&sa.sa_mask);
        ::sigaction(sig, &sa, nullptr);
    }
    say("ready");
    if (ready_path) {
        std::ofstream(ready_path) << "ready" << std::endl;
    }
    for (;;) ::pause();
}

int ignoreTerm() {
    std::signal(SIGTERM, SIG_IGN);
    say("ready");
    for (;;) ::pause();
}

void noop(int) {}

// The grandchild asks to be told of its parent's death, then reports who adopted it. The main
// child stays until then (EOF on `done`, which only the grandchild holds at that point).
int orphanParent() {
    int done[2];
    if (::pipe(done) != 0) die("pipe");
    pid_t middle = ::fork();
    if (middle == 0) {
        ::close(done[0]);
        int p[2];
        if (::pipe(p) != 0) die("pipe");
        sigset_t usr1, old;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        ::sigprocmask(SIG_BLOCK, &usr1, &old);
        if (::fork() == 0) {
            std::signal(SIGUSR1, noop);
            ::prctl(PR_SET_PDEATHSIG, SIGUSR1);
            if (::write(p[1], "x", 1) != 1) die("write");
            ::sigsuspend(&old);
            say("orphan-ppid " + std::to_string(::getppid()));
            ::_exit(0);
        }
        ::close(done[1]);
        char c;
        if (::read(p[0], &c, 1) != 1) die("read");
        ::_exit(0);
    }
    ::close(done[1]);
    int status;
    ::waitpid(middle, &status, 0);
    char c;
    while (::read(done[0], &c, 1) > 0) {}
    return 0;
}

// Appends the wall-clock time of its start, in nanoseconds, to FILE (a deploy command for the
// latency benchmark).
int stamp(const char* file) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::ofstream(file, std::ios::app) << (static_cast<long long>(now.tv_sec) * 1'000'000'000LL + now.tv_nsec) << "\n";
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "orphans" && argc > 2) return orphans(std::atoi(argv[2]));
    if (cmd == "sigstate") return sigstate();
    if (cmd == "with-signals") return withSignals(argc, argv);
    if (cmd == "fds") return fds();
    if (cmd == "catch-all") return catchAll();
    if (cmd == "ignore-term") return ignoreTerm();
    if (cmd == "stamp" && argc > 2) return stamp(argv[2]);
    if (cmd == "stubborn") return stubborn(argc > 2 ? argv[2] : nullptr);
    if (cmd == "orphan-parent") return orphanParent();
    std::fprintf(stderr, "usage: testkit orphans N | sigstate | with-signals ... | fds | catch-all | ignore-term | orphan-parent\n");
    return 2;
}
