#include "control/Status.hpp"

#include <array>
#include <utility>

namespace nixproc {
namespace {

constexpr std::array<std::pair<Trigger, std::string_view>, 7> kTriggers{{
    {Trigger::Boot, "boot"},
    {Trigger::Watch, "watch"},
    {Trigger::Signal, "signal"},
    {Trigger::Retry, "retry"},
    {Trigger::Control, "control"},
    {Trigger::Rollback, "rollback"},
    {Trigger::AutoRollback, "auto-rollback"},
}};

constexpr std::array<std::pair<Outcome, std::string_view>, 6> kOutcomes{{
    {Outcome::Running, "running"},
    {Outcome::Succeeded, "succeeded"},
    {Outcome::Failed, "failed"},
    {Outcome::Refused, "refused"},
    {Outcome::TimedOut, "timed out"},
    {Outcome::Interrupted, "interrupted"},
}};

template <typename Enum, std::size_t N>
std::string_view lookup(const std::array<std::pair<Enum, std::string_view>, N>& table, Enum value) {
    for (const auto& [e, n] : table)
        if (e == value) return n;
    return "?";
}

template <typename Enum, std::size_t N>
std::optional<Enum> lookup(const std::array<std::pair<Enum, std::string_view>, N>& table, std::string_view text) {
    for (const auto& [e, n] : table)
        if (n == text) return e;
    return std::nullopt;
}

} // namespace

std::string_view name(InitPhase phase) {
    switch (phase) {
    case InitPhase::Starting: return "starting";
    case InitPhase::Running: return "running";
    case InitPhase::StopSteps: return "stop-steps";
    case InitPhase::SignalMain: return "signal-main";
    case InitPhase::StopRest: return "stop-rest";
    case InitPhase::Killing: return "killing";
    case InitPhase::Exiting: return "exiting";
    }
    return "?";
}

std::string_view name(DeployStage stage) {
    switch (stage) {
    case DeployStage::WaitingForManager: return "waiting-for-manager";
    case DeployStage::Idle: return "idle";
    case DeployStage::Debouncing: return "debouncing";
    case DeployStage::Bootstrapping: return "bootstrapping";
    case DeployStage::Checking: return "checking";
    case DeployStage::Switching: return "switching";
    case DeployStage::RollingBack: return "rolling-back";
    case DeployStage::Collecting: return "collecting-garbage";
    case DeployStage::Stopped: return "stopped";
    }
    return "?";
}

std::string_view name(Trigger trigger) { return lookup(kTriggers, trigger); }
std::string_view name(Outcome outcome) { return lookup(kOutcomes, outcome); }
std::optional<Trigger> triggerNamed(std::string_view text) { return lookup(kTriggers, text); }
std::optional<Outcome> outcomeNamed(std::string_view text) { return lookup(kOutcomes, text); }

// Ready means the services are as the model says, as far as the init knows: the manager answered
// and started, and the model needs no deployment or the last one succeeded. A deployment that
// runs now does not make the container unready (the services of the last one still answer),
// unless nothing was ever deployed.
Health readiness(const Status& s) {
    if (s.phase == InitPhase::Starting) return {false, "starting: " + s.manager + " is not ready yet"};
    if (s.phase != InitPhase::Running) return {false, "stopping (" + std::string(name(s.phase)) + ")"};
    if (s.manager_given_up) return {false, s.manager + " never answered its readiness probe"};
    if (!s.deploy) return {true, "running"};
    const DeployStatus& d = *s.deploy;
    if (d.stage == DeployStage::WaitingForManager) return {false, "waiting for " + s.manager + " before deploying"};
    auto number = [](const DeploymentStatus& r) { return "deploy #" + std::to_string(r.number); };
    if (d.needed && d.last && d.last->outcome != Outcome::Succeeded)
        return {false, number(*d.last) + " " + std::string(name(d.last->outcome)) +
                           (d.current ? "; " + number(*d.current) + " is running" : "")};
    if (d.needed && !d.last_success)
        return {false, d.current ? number(*d.current) + " is running, nothing deployed yet" : "nothing deployed yet"};
    if (d.last_success) return {true, number(*d.last_success) + " succeeded" + (d.needed ? "; a change waits" : "")};
    return {true, "running, nothing to deploy"};
}

} // namespace nixproc
