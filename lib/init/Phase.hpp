#pragma once
// The Init's phases as a transition table, apart from the system calls that carry them out: what
// each event does in each phase is found here, and tested without root (tests/unit/PhaseTest.cpp).
#include "control/Status.hpp"

namespace nixproc {

enum class InitEvent {
    StartDone,     // the manager is ready (or given up on) and its start steps ran
    StopAsked,     // TERM, INT, QUIT, or `initctl`... : stop
    StopStepsDone, // the manager's own stop steps ended
    MainExited,    // the main child is gone (reaped)
    NothingLeft,   // no process is left but the init
    GraceOver,     // shutdown.grace_s ran out
    KillWaitOver,  // processes survived SIGKILL for a while: exit anyway
};

struct InitFacts {
    bool main_child_running = false; // a main child that has not exited
    bool others_left = false;        // processes besides it (children, adopted orphans, exec'd ones)
};

std::string_view name(InitEvent);

// The phase after `event` in `phase`; the same phase when the event changes nothing there.
InitPhase nextPhase(InitPhase phase, InitEvent event, const InitFacts& facts);

} // namespace nixproc
