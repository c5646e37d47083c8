#include "init/Phase.hpp"

namespace nixproc {

std::string_view name(InitEvent event) {
    switch (event) {
    case InitEvent::StartDone: return "start done";
    case InitEvent::StopAsked: return "stop asked";
    case InitEvent::StopStepsDone: return "stop steps done";
    case InitEvent::MainExited: return "main child exited";
    case InitEvent::NothingLeft: return "nothing left";
    case InitEvent::GraceOver: return "grace over";
    case InitEvent::KillWaitOver: return "kill wait over";
    }
    return "?";
}

namespace {

// Once the main child is gone: the rest is stopped, unless there is none.
InitPhase afterMain(const InitFacts& f) { return f.others_left ? InitPhase::StopRest : InitPhase::Exiting; }

} // namespace

InitPhase nextPhase(InitPhase phase, InitEvent event, const InitFacts& f) {
    using P = InitPhase;
    using E = InitEvent;
    if (phase == P::Exiting) return phase; // decided: nothing changes it
    switch (event) {
    case E::StartDone: return phase == P::Starting ? P::Running : phase;
    // A second request while stopping is passed on; the clock keeps running.
    case E::StopAsked: return phase == P::Starting || phase == P::Running ? P::StopSteps : phase;
    case E::StopStepsDone:
        if (phase != P::StopSteps) return phase;
        return f.main_child_running ? P::SignalMain : afterMain(f);
    // During the stop steps the steps finish first (they may still need what is left).
    case E::MainExited:
        if (phase == P::StopSteps || phase == P::Killing) return phase;
        return afterMain(f);
    case E::NothingLeft:
        // With a main child still there (no stop asked), nothing is over.
        if (f.main_child_running || phase == P::StopSteps) return phase;
        return phase == P::Starting || phase == P::Running || phase == P::SignalMain || phase == P::StopRest ||
                       phase == P::Killing
                   ? P::Exiting
                   : phase;
    case E::GraceOver: return phase == P::Starting || phase == P::Running ? phase : P::Killing;
    case E::KillWaitOver: return phase == P::Killing ? P::Exiting : phase;
    }
    return phase;
}

} // namespace nixproc
