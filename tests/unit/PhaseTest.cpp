// The Init's phases driven by events alone, without a process or root: what each event does in
// each phase (lib/init/Phase.hpp), and the readiness a probe derives from a Status.
#include "init/Phase.hpp"

#include <catch2/catch.hpp>
#include <initializer_list>
#include <utility>

using namespace nixproc;
using P = InitPhase;
using E = InitEvent;

namespace {

constexpr InitFacts kMainRuns{.main_child_running = true, .others_left = true};
constexpr InitFacts kMainGoneOthersLeft{.main_child_running = false, .others_left = true};
constexpr InitFacts kNothing{.main_child_running = false, .others_left = false};

// Feeds events in order, starting from Starting, and returns the phases passed through.
std::vector<P> drive(std::initializer_list<std::pair<E, InitFacts>> events) {
    std::vector<P> phases{P::Starting};
    for (const auto& [event, facts] : events) phases.push_back(nextPhase(phases.back(), event, facts));
    return phases;
}

} // namespace

TEST_CASE("a docker stop goes through the stop steps, the main child, the rest, and exits", "[phase]") {
    CHECK(drive({{E::StartDone, kMainRuns},
                 {E::StopAsked, kMainRuns},
                 {E::StopStepsDone, kMainRuns},
                 {E::MainExited, kMainGoneOthersLeft},
                 {E::NothingLeft, kNothing}}) ==
          std::vector<P>{P::Starting, P::Running, P::StopSteps, P::SignalMain, P::StopRest, P::Exiting});
}

TEST_CASE("a main child that exits by itself with nothing else left ends the init at once", "[phase]") {
    CHECK(nextPhase(P::Running, E::NothingLeft, kNothing) == P::Exiting);
    CHECK(nextPhase(P::Starting, E::MainExited, kNothing) == P::Exiting);
    CHECK(nextPhase(P::Running, E::MainExited, kMainGoneOthersLeft) == P::StopRest);
}

TEST_CASE("nothing but the stop steps ends the stop steps, not even the main child's exit", "[phase]") {
    CHECK(nextPhase(P::StopSteps, E::MainExited, kMainGoneOthersLeft) == P::StopSteps);
    CHECK(nextPhase(P::StopSteps, E::NothingLeft, kNothing) == P::StopSteps);
    CHECK(nextPhase(P::StopSteps, E::StopStepsDone, kMainGoneOthersLeft) == P::StopRest);
    CHECK(nextPhase(P::StopSteps, E::StopStepsDone, kNothing) == P::Exiting);
    CHECK(nextPhase(P::StopSteps, E::GraceOver, kMainRuns) == P::Killing);
}

TEST_CASE("without a main child (sysvinit) nothing left while running is no reason to exit", "[phase]") {
    // The Init counts a manager without a main child as running until the stop is asked for.
    CHECK(nextPhase(P::Running, E::NothingLeft, kMainRuns) == P::Running);
    CHECK(nextPhase(P::SignalMain, E::NothingLeft, kMainRuns) == P::SignalMain);
}

TEST_CASE("a second stop request while stopping changes no phase", "[phase]") {
    for (P p : {P::StopSteps, P::SignalMain, P::StopRest, P::Killing}) CHECK(nextPhase(p, E::StopAsked, kMainRuns) == p);
}

TEST_CASE("the grace over means killing from every stopping phase, and the kill wait over means exiting", "[phase]") {
    for (P p : {P::StopSteps, P::SignalMain, P::StopRest}) CHECK(nextPhase(p, E::GraceOver, kMainGoneOthersLeft) == P::Killing);
    CHECK(nextPhase(P::Killing, E::MainExited, kMainGoneOthersLeft) == P::Killing);
    CHECK(nextPhase(P::Killing, E::NothingLeft, kNothing) == P::Exiting);
    CHECK(nextPhase(P::Killing, E::KillWaitOver, kMainGoneOthersLeft) == P::Exiting);
}

TEST_CASE("once exiting, no event changes the phase", "[phase]") {
    for (E e : {E::StartDone, E::StopAsked, E::StopStepsDone, E::MainExited, E::NothingLeft, E::GraceOver, E::KillWaitOver})
        CHECK(nextPhase(P::Exiting, e, kMainRuns) == P::Exiting);
}

TEST_CASE("a start done late, after a stop was asked for, does not make the init running again", "[phase]") {
    CHECK(nextPhase(P::StopSteps, E::StartDone, kMainRuns) == P::StopSteps);
    CHECK(nextPhase(P::StopRest, E::StartDone, kMainGoneOthersLeft) == P::StopRest);
}

namespace {

Status runningWith(DeployStatus d) {
    return Status{.phase = P::Running, .manager = "supervisord", .main_pid = 2, .deploy = std::move(d)};
}

DeploymentStatus deployment(unsigned n, Outcome outcome) { return {.number = n, .outcome = outcome}; }

} // namespace

TEST_CASE("ready: the manager started and the model deployed, or nothing to deploy", "[phase][health]") {
    CHECK_FALSE(readiness(Status{.phase = P::Starting, .manager = "supervisord"}).ok);
    CHECK_THAT(readiness(Status{.phase = P::Starting, .manager = "supervisord"}).why, Catch::Contains("supervisord is not ready"));
    CHECK_FALSE(readiness(Status{.phase = P::StopRest, .manager = "supervisord"}).ok);
    CHECK_FALSE(readiness(Status{.phase = P::Running, .manager = "s6-rc", .manager_given_up = true}).ok);
    CHECK(readiness(Status{.phase = P::Running, .manager = "none"}).ok); // a plain init

    DeployStatus d{.stage = DeployStage::Idle};
    d.needed = true;
    CHECK(readiness(runningWith(d)).why == "nothing deployed yet");
    d.current = deployment(1, Outcome::Running);
    CHECK(readiness(runningWith(d)).why == "deploy #1 is running, nothing deployed yet");
    d.current.reset();
    d.last = d.last_success = deployment(1, Outcome::Succeeded);
    d.needed = false;
    CHECK(readiness(runningWith(d)).ok);
    CHECK(readiness(runningWith(d)).why == "deploy #1 succeeded");
    // A later failure of a change that still waits: not ready, and it says which.
    d.last = deployment(2, Outcome::Failed);
    d.needed = true;
    CHECK_FALSE(readiness(runningWith(d)).ok);
    CHECK(readiness(runningWith(d)).why == "deploy #2 failed");
    // The model put back as it was deployed: nothing needed, ready again.
    d.needed = false;
    CHECK(readiness(runningWith(d)).ok);
    // A deployment of a change running while the last one succeeded: the old services answer.
    d.last = deployment(2, Outcome::Succeeded);
    d.last_success = d.last;
    d.current = deployment(3, Outcome::Running);
    d.needed = true;
    CHECK(readiness(runningWith(d)).ok);
    d.stage = DeployStage::WaitingForManager;
    CHECK_FALSE(readiness(runningWith(d)).ok);
}
