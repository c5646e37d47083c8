#include "deploy/DeployQueue.hpp"

#include "deploy/Model.hpp"
#include "deploy/ModelWatcher.hpp"
#include "deploy/ProfileDiff.hpp"
#include "deploy/StateStore.hpp"
#include "deploy/SwitchCommand.hpp"
#include "io/FileWrite.hpp"
#include "process/ChildJob.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

extern char** environ;

namespace nixproc {

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;


struct Request {
    Trigger trigger = Trigger::Boot;
    bool force = false;  // deploy even when the model is as last deployed
    std::vector<std::string> changed; // watch: what the saves changed (ModelWatcher's names)
    // Rollback, AutoRollback: the generation to go back to (resolved when the request is made).
    std::optional<unsigned> generation;
    std::vector<DeployObserver> observers; // told when it starts and ends (initctl --wait)

    bool rollback() const { return trigger == Trigger::Rollback || trigger == Trigger::AutoRollback; }
};

void tell(const std::vector<DeployObserver>& observers, const DeployEvent& event) {
    for (const auto& observer : observers)
        if (observer) observer(event);
}

// How much more likely than the manager a deployment's job is to be picked by the OOM killer: a
// nix-build killed is tried again, a supervisord killed takes the container down.
constexpr int kJobOomScoreRaise = 500;

// The longest wait between two tries of a deployment that timed out or was interrupted.
constexpr std::chrono::seconds kMaxRetryBackoff{3600};

// The job died of a signal that the init did not send (it was not stopped, nor timed out), and
// not of its own crash. Signals a job gets from someone else (the OOM killer's SIGKILL, a kill, a hang-up) rather than
// from its own fault: a crash (SIGSEGV, SIGABRT from an assertion...) fails the same way again,
// so it is a failure that waits for the next change, not something to try again.
bool killedFromOutside(const JobResult& r) {
    if (!r.started || r.timed_out || r.signal == 0) return false;
    switch (r.signal) {
    case SIGSEGV: case SIGABRT: case SIGBUS: case SIGFPE: case SIGILL: case SIGTRAP: case SIGSYS: return false;
    default: return true;
    }
}

// "killed by SIGKILL", and who may have sent it: not the init (it did not stop the job, nor time it out).
std::string killedHow(const JobResult& r) {
    return r.description + (r.signal == SIGKILL ? ", which nixproc-init did not send (the OOM killer?)" : "");
}

// Could not be started for want of processes, memory or descriptors (a pids limit's EAGAIN): that
// passes, so it is tried again like a job killed from outside. A program that is missing or not
// executable stays so until the image or the configuration changes.
bool shortOfResources(const JobResult& r) {
    if (r.started) return false;
    for (auto e : {std::errc::resource_unavailable_try_again, std::errc::not_enough_memory, std::errc::too_many_files_open,
                   std::errc::too_many_files_open_in_system})
        if (r.spawn_error == e) return true;
    return false;
}

} // namespace

struct DeployQueue::Impl {
    boost::asio::io_context& io;
    const Spawner& spawner;
    Reaper& reaper;
    const Config& config;
    const ProcessManager& manager;
    Model model{config.processes, config.watch.extra};
    StateStore store{config.state_dir};
    bool recording = false;   // the state folder is ours: deployments are recorded there
    std::string temp_folder;  // ours, when the state folder cannot hold the model's copy
    std::string copy_folder;  // where each deployment's copy of the model is written
    DeployState state;
    std::optional<ModelWatcher> watcher;
    std::string watcher_problem;          // why edits are not watched, when they should be
    DeployStage stage = DeployStage::WaitingForManager; // see enter()
    std::optional<Request> pending;       // what to deploy after the running one (or once ready)
    std::vector<DeployObserver> observers; // of the running deployment
    std::map<Outcome, unsigned> by_outcome; // deployments ended since the init started
    std::shared_ptr<ChildJob> job;        // the step of the running deployment
    std::optional<DeploymentRecord> current;
    std::string model_copy;               // the running deployment's copy of processes.nix
    bool switch_ran = false;              // the running deployment got as far as the switch
    std::string profile_before;           // the profile's generation when the switch started
    bool invocation_noted = false;        // SwitchInvocation::notes are said once
    Clock::time_point next_channel_try{};  // no channel set-up before this, after a failure
    std::chrono::seconds channel_backoff = config.deploy.retry_backoff;
    Clock::time_point started;
    std::optional<ProfileSnapshot> before;
    boost::asio::steady_timer retry_timer{io};
    // Housekeeping (gc:): what is due, and runs when no deployment does.
    boost::asio::steady_timer collect_timer{io}; // only armed with gc.collect_every_h
    bool delete_generations_due = false;       // a deployment succeeded since the last deletion
    bool collect_due = false;                  // nix-collect-garbage: the count or the schedule says so
    unsigned successes_since_collect = 0;
    std::shared_ptr<ChildJob> gc_job;
    unsigned gc_round = 0;                     // a gc job's completion from an older round does nothing
    Clock::time_point gc_started;
    std::string gc_label;                      // "gc after deploy #4", "gc (gc.collect_every_h)"
    unsigned retries_done = 0;   // tries again of the same deployment so far
    unsigned retry_round = 0;    // a retry completion from an older round does nothing

    Impl(boost::asio::io_context& i, const Spawner& s, Reaper& r, const Config& c, const ProcessManager& m)
        : io(i), spawner(s), reaper(r), config(c), manager(m) {
        std::string why;
        switch (store.open(why)) {
        case StateAccess::Ready:
            recording = true;
            copy_folder = config.state_dir + "/model";
            try {
                state = store.load();
            } catch (const std::exception& e) {
                spdlog::error("{}; deploying as on a first boot", e.what());
            }
            break;
        case StateAccess::HeldByAnother:
            // The services still run; only deploying from a shared state folder is refused.
            spdlog::error("state folder {}: {}; deployments are off", config.state_dir, why);
            stage = DeployStage::Stopped;
            return;
        case StateAccess::Unusable:
            // A read-only image must still deploy: without a lock and without records, so each
            // start deploys as a first boot. Said once, here.
            temp_folder = makePrivateFolder("nixproc-init"); // for the model's copy
            copy_folder = temp_folder.empty() ? "" : temp_folder + "/model";
            spdlog::error("state folder {}: {}; deploying without a lock and without records (each start deploys "
                          "again); the model is copied to {}",
                          config.state_dir, why, copy_folder.empty() ? "nowhere: no private temporary folder" : copy_folder);
            break;
        }
        if (config.watch.enabled) {
            try {
                // The watcher is a member: it is destroyed with this, and never calls back after.
                watcher.emplace(io, model, config.watch.debounce, [this](const std::vector<std::string>& changed) {
                    request({.trigger = Trigger::Watch, .changed = changed});
                });
            } catch (const std::exception& e) {
                watcher_problem = e.what();
                spdlog::error("cannot watch {}: {}; edits will not be deployed until SIGHUP", model.path, e.what());
            }
        }
    }

    ~Impl() {
        if (temp_folder.empty()) return;
        std::error_code ec;
        std::filesystem::remove_all(temp_folder, ec);
    }

    // The stage says what runs; the rest of the engine reads it rather than flags of its own.
    void enter(DeployStage next) {
        if (next == stage) return;
        spdlog::debug("deploy stage {} -> {}", name(stage), name(next));
        stage = next;
    }
    bool stopped() const { return stage == DeployStage::Stopped; }
    bool waitingForManager() const { return stage == DeployStage::WaitingForManager; }
    bool running() const { return current.has_value(); }

    void managerReady() {
        if (stopped()) return;
        enter(DeployStage::Idle);
        scheduleCollection();
        // The last deployment never ended (the init was killed or stopped in it): whatever the
        // model's fingerprint says, what runs may be half of it.
        if (state.lastUnfinished() && config.deploy.on_boot != OnBoot::Never) {
            spdlog::info("deploy #{} did not finish ({}): deploying again", state.deployments.back().number,
                         name(state.deployments.back().outcome));
            request({.trigger = Trigger::Boot, .force = true});
            return;
        }
        switch (config.deploy.on_boot) {
        case OnBoot::Never: break;
        case OnBoot::First:
            if (!state.bootstrapped) request({.trigger = Trigger::Boot, .force = true});
            break;
        case OnBoot::Changed: {
            auto fingerprint = model.fingerprint();
            if (state.bootstrapped && !state.rolled_back_fingerprint.empty() && fingerprint == state.rolled_back_fingerprint)
                spdlog::info("{} unchanged since a rollback undid its deployment: not deployed again at boot (edit it, or "
                             "nixproc-initctl deploy)", model.fileName());
            else if (!state.bootstrapped || fingerprint != state.deployed_fingerprint) request({.trigger = Trigger::Boot, .force = true});
            else spdlog::info("{} unchanged since deployment #{}: nothing to deploy at boot", model.fileName(), lastSuccess());
            break;
        }
        case OnBoot::Always: request({.trigger = Trigger::Boot, .force = true}); break;
        }
        if (pending && !running()) startNext();
    }

    unsigned lastSuccess() const {
        for (auto it = state.deployments.rbegin(); it != state.deployments.rend(); ++it)
            if (it->outcome == Outcome::Succeeded) return it->number;
        return 0;
    }

    // Two requests that do the same thing: deploy the model (whatever asked), or roll back to the
    // same generation.
    static bool sameWork(const Request& a, const Request& b) {
        return a.rollback() == b.rollback() && (!a.rollback() || a.generation == b.generation);
    }

    static std::string describe(const Request& r) {
        if (!r.rollback()) return "a deployment of the model";
        return "a rollback to generation " + std::to_string(r.generation.value_or(0));
    }

    // One follow-up at most, which reads the latest content when it starts. Requests for the same
    // work coalesce (their waiters follow the one deployment; a forced one is never downgraded by
    // a plain save); a later request for other work replaces the one waiting, said in the log and
    // to its waiters, except a plain save, which never replaces a rollback or a forced request.
    void request(Request r) {
        if (stopped()) return tell(r.observers, {.kind = DeployEvent::Kind::NotStarted, .why = "deployments are off"});
        const bool queued_before = pending.has_value();
        if (!pending) {
            pending = std::move(r);
        } else if (sameWork(*pending, r)) {
            if (pending->trigger == Trigger::Watch && r.trigger == Trigger::Watch) // both named in the follow-up
                for (const auto& what : r.changed)
                    if (pending->changed.size() < ModelWatcher::kMaxChangesKept &&
                        std::find(pending->changed.begin(), pending->changed.end(), what) == pending->changed.end())
                        pending->changed.push_back(what);
            if (r.force && !pending->force) {
                pending->trigger = r.trigger;
                pending->force = true;
            }
            pending->observers.insert(pending->observers.end(), r.observers.begin(), r.observers.end());
        } else if (r.force) {
            spdlog::warn("{} replaces {}, which was waiting", describe(r), describe(*pending));
            tell(pending->observers, {.kind = DeployEvent::Kind::NotStarted, .why = "replaced by " + describe(r) + ", asked for later"});
            pending = std::move(r);
        } else {
            spdlog::info("{} saved while {} waits: it goes first; save again (or nixproc-initctl deploy) after it",
                         model.fileName(), describe(*pending));
            tell(r.observers, {.kind = DeployEvent::Kind::NotStarted, .why = describe(*pending) + " waits"});
            return;
        }
        if (waitingForManager()) return;
        if (running()) {
            if (!queued_before) spdlog::info("deploy #{}: still running; {} after it", current->number, describe(*pending));
            return;
        }
        startNext();
    }

    std::string triggerText(const Request& r) const {
        switch (r.trigger) {
        case Trigger::Boot: return state.bootstrapped ? "at boot" : "first deployment";
        case Trigger::Watch: return watch::describeChanges(r.changed) + " changed";
        case Trigger::Retry: return "trying again (" + std::to_string(retries_done) + " of " + std::to_string(config.deploy.retries) + ")";
        case Trigger::Signal: return "asked for by SIGHUP";
        case Trigger::Control: return "asked for by nixproc-initctl";
        case Trigger::Rollback: return "rollback, asked for by nixproc-initctl";
        case Trigger::AutoRollback: return "rollback after the failed deployment (deploy.on_failure: rollback)";
        }
        return "?";
    }

    void startNext() {
        if (!pending || stopped() || running() || stage == DeployStage::Collecting) return;
        // Saves are still coming in: the file may be half-written. The watcher calls back once
        // they have been quiet for the debounce, and the follow-up starts then.
        if (watcher && watcher->settling() && !pending->rollback()) return enter(DeployStage::Debouncing);
        Request r = std::move(*pending);
        pending.reset();
        enter(DeployStage::Idle);
        if (r.rollback()) return startRollback(std::move(r));
        // Read once: this content is fingerprinted, checked for trust, and copied to where the
        // check and the switch read it. Later saves cannot slip into this deployment.
        auto read = model.read();
        if (!read.snapshot) {
            if (read.error.missing) spdlog::warn("{}: {}: nothing to deploy", triggerText(r), read.error.message);
            else spdlog::error("{}: cannot read the model: {}; nothing deployed", triggerText(r), read.error.message);
            return tell(r.observers, {.kind = DeployEvent::Kind::NotStarted, .why = read.error.message});
        }
        const ModelSnapshot& snapshot = *read.snapshot;
        if (!r.force && snapshot.fingerprint == state.deployed_fingerprint) {
            spdlog::info("{} saved, unchanged since deployment #{}: nothing to do", model.fileName(), lastSuccess());
            return tell(r.observers, {.kind = DeployEvent::Kind::NotStarted, .why = "unchanged"});
        }
        if (!r.force && snapshot.fingerprint == state.rolled_back_fingerprint) {
            spdlog::info("{} saved, unchanged since a rollback undid its deployment: nothing to do (nixproc-initctl deploy "
                         "deploys it again)", model.fileName());
            return tell(r.observers, {.kind = DeployEvent::Kind::NotStarted, .why = "unchanged since the rollback"});
        }
        begin(r, snapshot.fingerprint);
        if (!snapshot.insecurity.empty()) {
            if (!config.deploy.allow_insecure_model)
                return finish(Outcome::Refused, std::nullopt,
                              snapshot.insecurity + ": whoever can write the model runs code as root through the switch "
                                                    "(fix the permissions, or set deploy.allow_insecure_model)");
            spdlog::warn("deploy #{}: {} (allowed by deploy.allow_insecure_model)", current->number, snapshot.insecurity);
        }
        try {
            if (copy_folder.empty()) throw std::runtime_error("no private folder for the model's copy");
            model_copy = snapshot.writeTo(copy_folder, model.fileName());
        } catch (const std::exception& e) {
            return finish(Outcome::Failed, std::nullopt, "cannot copy the model: " + std::string(e.what()));
        }
        spdlog::debug("{}: deploying the copy of {} in {}", prefix(), model.folder(), copy_folder);
        record();
        enter(DeployStage::Bootstrapping);
        bootstrapChannel([this] { checkModel(); });
    }

    // A deployment starts: numbered, recorded as running, said, and told to who waits for it.
    void begin(Request& r, std::string fingerprint) {
        ++retry_round; // a retry still scheduled is covered by this deployment
        switch_ran = false;
        if (r.trigger != Trigger::Retry) retries_done = 0;
        current = DeploymentRecord{.number = state.nextNumber(), .trigger = r.trigger, .fingerprint = std::move(fingerprint),
                                   .started = StateStore::now(), .outcome = Outcome::Running};
        started = Clock::now();
        state.add(*current);
        spdlog::info("deploy #{}: {}", current->number, triggerText(r));
        observers = std::move(r.observers);
        tell(observers, {.kind = DeployEvent::Kind::Started, .number = current->number});
    }

    // A rollback is a deployment of its own: numbered, recorded, its plan said. The upstream way:
    // the switch's own operations on the profile (see rollbackInvocation), the same environment
    // and options as its deployments.
    // The plan is made again when it starts: the profile may have changed since it was asked for
    // (a deployment ran meanwhile).
    void startRollback(Request r) {
        RollbackPlan plan = rollbackPlan(config, manager, r.generation, environmentMap(environ));
        begin(r, "");
        if (!plan.refusal.empty()) return finish(Outcome::Refused, std::nullopt, plan.refusal);
        spdlog::info("{}: from generation {} to {}", prefix(), plan.from, plan.to);
        record();
        enter(DeployStage::RollingBack);
        before = manager.inventory(config.profile);
        switch_ran = true;
        profile_before = profileTarget();
        runRollbackSteps(std::move(plan.invocation), 0);
    }

    void runRollbackSteps(SwitchInvocation invocation, std::size_t next) {
        if (next >= invocation.steps.size()) {
            sayPlan();
            return finish(Outcome::Succeeded, 0, "");
        }
        // The spec is made before the completion takes the invocation over.
        JobSpec spec{.argv = invocation.steps[next], .environment = invocation.environment, .log_prefix = prefix() + " |",
                     .keep_group_on_success = manager.switchStartsServices()};
        std::string program = spec.argv.front();
        run(std::move(spec), [this, invocation = std::move(invocation), next, program](const JobResult& r) mutable {
            if (r.ok()) return runRollbackSteps(std::move(invocation), next + 1);
            sayPlan();
            if (!r.started) {
                if (next == 0) switch_ran = false; // nothing was touched
                return finish(shortOfResources(r) ? Outcome::Interrupted : Outcome::Failed, r.exit_code, r.description);
            }
            if (killedFromOutside(r)) return finish(Outcome::Interrupted, r.exit_code, program + " was " + killedHow(r));
            finish(r.timed_out ? Outcome::TimedOut : Outcome::Failed, r.exit_code,
                   program + " " + r.description + (r.timed_out ? " after deploy.timeout_s " + std::to_string(config.deploy.timeout.count()) + " s" : ""));
        });
    }

    // The plan, from the profile's inventory before and after: what the services went through.
    void sayPlan() {
        if (auto after = manager.inventory(config.profile); before && after) {
            current->plan = diffProfiles(*before, *after).describe();
            spdlog::info("{}: {}", prefix(), current->plan);
        }
    }

    // Upstream's bootstrap adds a channel and updates it before its first switch
    // (nixproc/create-image-from-steps/steps/bootstrap-init.nix): models import <nixpkgs> through
    // NIX_PATH=/nix/var/nix/profiles/per-user/root/channels. Once root's channels profile exists
    // (the image's, or an earlier run's) there is nothing to do. A failure, such as no network, is
    // one line; the deployment goes ahead (a model that needs <nixpkgs> then fails in the switch and
    // says why), and the channel is tried again before a later deployment once deploy.retry_backoff_s
    // has passed (doubled after each failure, up to an hour), so that deployments offline do not
    // each wait for it.
    void bootstrapChannel(std::function<void()> then) {
        if (config.bootstrap.channel.empty() || state.channel_configured) return then();
        if (std::string profile = rootChannelsProfile(); fs::exists(fs::symlink_status(profile))) {
            spdlog::info("bootstrap: root's channels profile {} exists: no channel set-up", profile);
            state.channel_configured = true;
            return then();
        }
        if (Clock::now() < next_channel_try) return then();
        spdlog::info("bootstrap: adding and updating channel {} (at most {} s each)", config.bootstrap.channel,
                     config.bootstrap.timeout.count());
        JobSpec add{.argv = {"nix-channel", "--add", config.bootstrap.channel}, .environment = channelEnvironment(),
                    .log_prefix = "bootstrap |", .output_at_debug = true};
        run(add, [this, then, update = add](const JobResult& added) mutable {
            if (!added.ok()) return channelFailed("nix-channel --add", added, then);
            update.argv = {"nix-channel", "--update"};
            run(update, [this, then](const JobResult& updated) {
                if (!updated.ok()) return channelFailed("nix-channel --update", updated, then);
                state.channel_configured = true;
                channel_backoff = config.deploy.retry_backoff;
                spdlog::info("bootstrap: channel {} added and updated", config.bootstrap.channel);
                then();
            }, config.bootstrap.timeout);
        }, config.bootstrap.timeout);
    }

    void channelFailed(const std::string& what, const JobResult& r, const std::function<void()>& then) {
        next_channel_try = Clock::now() + channel_backoff;
        std::string how = r.timed_out ? "still running after bootstrap.timeout_s " + std::to_string(config.bootstrap.timeout.count()) + " s"
                                      : r.description;
        spdlog::error("bootstrap: channel {} not set up ({} {}{}); deploying without it, next try before a deployment "
                      "in {} s or later",
                      config.bootstrap.channel, what, how, r.last_line.empty() ? "" : ": " + r.last_line,
                      channel_backoff.count());
        channel_backoff = std::min<std::chrono::seconds>(channel_backoff * 2, std::chrono::hours(1));
        then();
    }

    // nix-channel's profile for root: $NIX_STATE_DIR/profiles/per-user/root/channels.
    static std::string rootChannelsProfile() { return nixStateDir(environmentMap(environ)) + "/profiles/per-user/root/channels"; }

    // Without a network Nix retries each download for a while; a short connect timeout makes an
    // unreachable channel fail in seconds rather than minutes, and a stall timeout one that accepts
    // and never answers (a user's own settings win).
    static std::vector<std::string> channelEnvironment() {
        std::map<std::string, std::string> env = environmentMap(environ);
        std::string& nix_config = env["NIX_CONFIG"];
        for (const char* setting : {"connect-timeout = 10", "stalled-download-timeout = 30"})
            if (nix_config.find(std::string_view(setting).substr(0, std::string_view(setting).find(' '))) == std::string::npos)
                nix_config += std::string(nix_config.empty() ? "" : "\n") + setting;
        return environmentList(env);
    }

    void checkModel() {
        if (config.deploy.check.empty()) return switchModel();
        enter(DeployStage::Checking);
        auto argv = config.deploy.check;
        argv.push_back(model_copy);
        run({.argv = argv, .log_prefix = prefix() + " check |", .output_only_on_failure = true},
            [this, program = argv.front()](const JobResult& r) {
            if (r.ok()) return switchModel();
            if (!r.started) return finish(shortOfResources(r) ? Outcome::Interrupted : Outcome::Failed, r.exit_code, "deploy.check: " + r.description);
            if (killedFromOutside(r)) return finish(Outcome::Interrupted, r.exit_code, "deploy.check (" + program + ") was " + killedHow(r));
            // Its status does not tell a model that does not evaluate from a machine that cannot
            // evaluate it (out of memory, no permission on /nix): its output does.
            finish(Outcome::Failed, r.exit_code,
                   "deploy.check failed: " + program + " " + r.description + (r.last_line.empty() ? "" : " (its output above says why)") +
                       ": not switching");
        });
    }

    void switchModel() {
        enter(DeployStage::Switching);
        before = manager.inventory(config.profile);
        switch_ran = true;
        profile_before = profileTarget();
        SwitchInvocation invocation = switchInvocation(config, manager, model_copy, environmentMap(environ));
        if (!invocation_noted) {
            for (const auto& note : invocation.notes) spdlog::warn("{}: {}", prefix(), note);
            invocation_noted = true;
        }
        run({.argv = invocation.argv, .environment = invocation.environment, .log_prefix = prefix() + " |",
             .keep_group_on_success = manager.switchStartsServices()},
            [this](const JobResult& r) {
            sayPlan();
            if (r.ok()) return finish(Outcome::Succeeded, 0, "");
            if (!r.started) {
                switch_ran = false; // nothing was touched
                return finish(shortOfResources(r) ? Outcome::Interrupted : Outcome::Failed, r.exit_code, r.description);
            }
            if (killedFromOutside(r))
                return finish(Outcome::Interrupted, r.exit_code, config.deployCommand().front() + " was " + killedHow(r));
            finish(r.timed_out ? Outcome::TimedOut : Outcome::Failed, r.exit_code,
                   config.deployCommand().front() + " " + r.description +
                       (r.timed_out ? " after deploy.timeout_s " + std::to_string(config.deploy.timeout.count()) + " s" : ""));
        });
    }

    // Every job of a deployment: bounded by deploy.timeout_s (unless `timeout` says otherwise: the
    // channel's steps), then SIGKILL after the grace. Under memory pressure the OOM killer takes it
    // rather than the manager, unless it starts services (sysvinit's or disnix's switch), which
    // would inherit the raised score. Its completion does nothing once its deployment was
    // abandoned (the init exits).
    void run(JobSpec spec, std::function<void(const JobResult&)> done, std::optional<std::chrono::seconds> timeout = {}) {
        spec.timeout = timeout.value_or(config.deploy.timeout);
        spec.kill_after = config.shutdown.grace;
        if (!spec.keep_group_on_success) spec.oom_score_raise = kJobOomScoreRaise;
        job = ChildJob::start(io, spawner, reaper, std::move(spec),
                              [this, number = current->number, done = std::move(done)](const JobResult& r) {
            if (!current || current->number != number) return;
            job.reset();
            if (stopped() && current) return finish(Outcome::Interrupted, r.exit_code, "stopped by the shutdown");
            done(r);
        });
    }

    std::string prefix() const { return "deploy #" + std::to_string(current->number); }

    // Where the profile link points (its generation), "" when there is none.
    std::string profileTarget() const {
        std::error_code ec;
        auto target = std::filesystem::read_symlink(config.profile, ec);
        return ec ? "" : target.string();
    }

    // What is true of the running services after a deployment that did not succeed. Before the
    // switch nothing was touched; once it ran, the upstream switches change conf.d links, rc
    // scripts or the live database before they set the profile, so some services may be updated.
    std::string servicesAfterFailure() const {
        if (!switch_ran) return "the running services are as they were";
        std::string after = profileTarget();
        std::string profile = after == profile_before ? "the profile was not switched" : "the profile was switched to " + after;
        auto generation = generationOf(profile_before);
        return profile + ", but services may be partly updated (the switch's output above says which); the next "
                         "change or SIGHUP deploys again" +
               (!generation || config.deploy.on_failure == OnFailure::Rollback ||
                        !rollbackPlan(config, manager, generation, environmentMap(environ)).refusal.empty()
                    ? ""
                    : ", `nixproc-initctl rollback --to " + std::to_string(*generation) + "` goes back to the generation that ran before");
    }

    // The state file first, then the log line: whoever reads the log may rely on the record.
    void finish(Outcome outcome, std::optional<int> exit_code, const std::string& why) {
        double secs = std::chrono::duration<double>(Clock::now() - started).count();
        bool was_rollback = current->trigger == Trigger::Rollback || current->trigger == Trigger::AutoRollback;
        current->outcome = outcome;
        current->exit_code = exit_code;
        current->ended = StateStore::now();
        current->generation = generationOf(profileTarget());
        ++by_outcome[outcome];
        if (outcome == Outcome::Succeeded) {
            state.bootstrapped = true;
            retries_done = 0;
            delete_generations_due = config.gc.keep_generations > 0;
            if (config.gc.collect_after_deployments && ++successes_since_collect >= config.gc.collect_after_deployments) collect_due = true;
            if (was_rollback) {
                // What runs is no model the init knows: the model as it is now is not deployed
                // again until it changes, at boot included.
                state.deployed_fingerprint.clear();
                state.rolled_back_fingerprint = model.fingerprint().value_or("");
            } else {
                state.deployed_fingerprint = current->fingerprint;
                state.rolled_back_fingerprint.clear();
            }
        }
        record();
        if (outcome == Outcome::Succeeded) spdlog::info("{}: done in {:.1f} s", prefix(), secs);
        else spdlog::error("{}: {} after {:.1f} s: {}; {}", prefix(), name(outcome), secs, why, servicesAfterFailure());
        DeployEvent ended{.kind = DeployEvent::Kind::Ended, .number = current->number, .outcome = outcome, .why = why};
        std::string before_switch = profile_before;
        bool touched = switch_ran;
        current.reset();
        if (!stopped()) enter(DeployStage::Idle);
        tell(std::exchange(observers, {}), ended);
        if (was_rollback) {
            if (outcome != Outcome::Succeeded && !stopped()) spdlog::info("the next change of the model (or SIGHUP) deploys again");
        } else if ((outcome == Outcome::Failed || outcome == Outcome::TimedOut) && touched &&
                   config.deploy.on_failure == OnFailure::Rollback && !stopped()) {
            rollBackAfterFailure(before_switch);
        } else if (outcome == Outcome::TimedOut || outcome == Outcome::Interrupted) {
            scheduleRetry();
        } else if (outcome != Outcome::Succeeded && !stopped()) {
            spdlog::info("the next change of the model (or SIGHUP) deploys again");
        }
        startNext();
        runHousekeeping(); // only when nothing was started: deployments go first
    }

    // gc.collect_every_h: the only timer of an idle engine, and only when set.
    void scheduleCollection() {
        if (config.gc.collect_every.count() == 0 || stopped()) return;
        collect_timer.expires_after(config.gc.collect_every);
        collect_timer.async_wait([this](const boost::system::error_code& ec) {
            if (ec || stopped()) return;
            collect_due = true;
            runHousekeeping();
            scheduleCollection();
        });
    }

    // gc: the profile's old generations, then the store, each logged like a deployment's step;
    // never while a deployment runs (it waits for the end), and a deployment asked for meanwhile
    // waits for it.
    void runHousekeeping() {
        if (stopped() || running() || pending || stage == DeployStage::Collecting) return;
        std::vector<std::vector<std::string>> steps;
        if (delete_generations_due)
            steps.push_back({"nix-env", "-p", config.profile, "--delete-generations", "+" + std::to_string(config.gc.keep_generations)});
        if (collect_due) steps.push_back({"nix-collect-garbage"});
        if (steps.empty()) return;
        gc_label = delete_generations_due || successes_since_collect ? "gc after deploy #" + std::to_string(state.nextNumber() - 1)
                                                                     : "gc (gc.collect_every_h)";
        delete_generations_due = collect_due = false;
        enter(DeployStage::Collecting);
        gc_started = Clock::now();
        runGcStep(std::move(steps), 0);
    }

    void runGcStep(std::vector<std::vector<std::string>> steps, std::size_t next) {
        if (next >= steps.size()) {
            spdlog::info("{}: done in {:.1f} s", gc_label, std::chrono::duration<double>(Clock::now() - gc_started).count());
            return endHousekeeping();
        }
        const auto& argv = steps[next];
        if (argv.front() == "nix-collect-garbage") successes_since_collect = 0;
        spdlog::info("{}: {}", gc_label, fmt::join(argv, " "));
        JobSpec spec{.argv = argv, .log_prefix = gc_label + " |", .timeout = config.gc.timeout, .kill_after = config.shutdown.grace,
                     .oom_score_raise = kJobOomScoreRaise};
        gc_job = ChildJob::start(io, spawner, reaper, std::move(spec),
                                 [this, round = ++gc_round, steps = std::move(steps), next](const JobResult& r) mutable {
            if (round != gc_round) return;
            gc_job.reset();
            if (stopped()) return;
            if (!r.ok()) {
                spdlog::error("{}: {} {}{}; the services are not affected", gc_label, steps[next].front(), r.description,
                              r.timed_out ? " after gc.timeout_s " + std::to_string(config.gc.timeout.count()) + " s" : "");
                return endHousekeeping();
            }
            runGcStep(std::move(steps), next + 1);
        });
    }

    void endHousekeeping() {
        enter(DeployStage::Idle);
        startNext();
    }

    // deploy.on_failure: rollback. The switch ran, failed, and had switched the profile: back to
    // the generation that ran before it. A switch that failed before it switched the profile left
    // nothing upstream's tools can undo: they compare profiles, and the profile is unchanged.
    void rollBackAfterFailure(const std::string& before_switch) {
        auto generation = generationOf(before_switch);
        if (!generation) {
            spdlog::error("deploy.on_failure is rollback, but {} had no generation before this deployment: nothing to roll "
                          "back to; the next change of the model (or SIGHUP) deploys again", config.profile);
            return;
        }
        if (profileTarget() == before_switch) {
            spdlog::error("deploy.on_failure is rollback, but the switch failed before it switched {}: there is no "
                          "generation to undo; the next change of the model (or SIGHUP) deploys again", config.profile);
            return;
        }
        request({.trigger = Trigger::AutoRollback, .force = true, .generation = generation});
    }

    // Timed out or interrupted: the model may be fine and the machine busy, so try again later,
    // each time waiting twice as long, a bounded number of times. A failed check or a switch that
    // exited non-zero is the model's fault: it waits for the next change.
    void scheduleRetry() {
        if (stopped()) return;
        if (retries_done >= config.deploy.retries) {
            if (config.deploy.retries > 0)
                spdlog::error("gave up after {} tries again; the next change of the model (or SIGHUP) deploys again",
                              retries_done);
            return;
        }
        auto wait = std::min<std::chrono::seconds>(config.deploy.retry_backoff * (1u << std::min(retries_done, 16u)), kMaxRetryBackoff);
        ++retries_done;
        spdlog::info("trying again in {} s ({} of {})", wait.count(), retries_done, config.deploy.retries);
        unsigned round = ++retry_round;
        retry_timer.expires_after(wait);
        retry_timer.async_wait([this, round](const boost::system::error_code& ec) {
            if (ec || round != retry_round) return; // cancelled, or a deployment started meanwhile
            request({.trigger = Trigger::Retry, .force = true});
        });
    }

    void record() {
        if (current) state.deployments.back() = *current;
        if (!recording) return;
        try {
            store.save(state);
        } catch (const std::exception& e) {
            spdlog::error("cannot record the deployment: {}", e.what());
        }
    }

    Reply deployNow(Trigger trigger, DeployObserver observer) {
        if (stopped()) return {.accepted = false, .why = "deployments are off"};
        Request r{.trigger = trigger, .force = true};
        if (observer) r.observers.push_back(std::move(observer));
        request(std::move(r));
        return {};
    }

    // Refused at once, with why, when there is no generation to go back to: before anything runs.
    Reply rollback(std::optional<unsigned> to, DeployObserver observer) {
        if (stopped()) return {.accepted = false, .why = "deployments are off"};
        RollbackPlan plan = rollbackPlan(config, manager, to, environmentMap(environ));
        if (!plan.refusal.empty()) return {.accepted = false, .why = plan.refusal};
        Request r{.trigger = Trigger::Rollback, .force = true, .generation = plan.to};
        if (observer) r.observers.push_back(std::move(observer));
        request(std::move(r));
        return {};
    }

    DeployStatus status() const {
        DeployStatus s{.stage = stage, .pending = pending.has_value(), .watching = watcher.has_value(),
                       .watcher_problem = watcher_problem, .by_outcome = by_outcome};
        if (s.stage == DeployStage::Idle && watcher && watcher->settling()) s.stage = DeployStage::Debouncing;
        if (current) {
            s.current = current->status();
            s.current_elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
        }
        for (auto it = state.deployments.rbegin(); it != state.deployments.rend(); ++it) {
            if (it->outcome == Outcome::Running || (current && it->number == current->number)) continue;
            if (!s.last) s.last = it->status();
            if (it->outcome == Outcome::Succeeded) {
                s.last_success = it->status();
                break;
            }
        }
        // The model is read once per status (a probe every few seconds): both answers come from it.
        if (auto fingerprint = model.fingerprint()) {
            s.rolled_back = !state.rolled_back_fingerprint.empty() && *fingerprint == state.rolled_back_fingerprint;
            // It differs from what was last deployed (and from what a rollback undid), and the
            // boot policy would deploy it.
            bool would_deploy = config.deploy.on_boot != OnBoot::Never || state.bootstrapped;
            s.needed = would_deploy && *fingerprint != state.deployed_fingerprint && !s.rolled_back;
        }
        return s;
    }

    std::vector<DeploymentStatus> history(unsigned count) const {
        std::vector<DeploymentStatus> out;
        std::size_t from = state.deployments.size() > count ? state.deployments.size() - count : 0;
        for (std::size_t i = from; i < state.deployments.size(); ++i) out.push_back(state.deployments[i].status());
        return out;
    }

    void shutdown() {
        enter(DeployStage::Stopped);
        watcher.reset();
        if (pending) tell(pending->observers, {.kind = DeployEvent::Kind::NotStarted, .why = "the init stops"});
        pending.reset();
        ++retry_round;
        retry_timer.cancel();
        collect_timer.cancel();
        if (job) job->stop();
        if (gc_job) gc_job->stop();
    }

    // The init is about to exit: the job's completion will never run (the loop stops), so the
    // deployment is ended here, recorded first and logged second; the job's completion, should it
    // still be queued, finds no deployment of its number and does nothing.
    void abandon(const std::string& why) {
        if (!stopped()) shutdown();
        if (!current) return;
        job.reset();
        finish(Outcome::Interrupted, std::nullopt, why);
    }
};

DeployQueue::DeployQueue(boost::asio::io_context& io, const Spawner& spawner, Reaper& reaper, const Config& config,
                         const ProcessManager& manager)
    : impl_(std::make_unique<Impl>(io, spawner, reaper, config, manager)) {}

DeployQueue::~DeployQueue() = default;

void DeployQueue::managerReady() { impl_->managerReady(); }
Reply DeployQueue::deployNow(Trigger trigger, DeployObserver observer) { return impl_->deployNow(trigger, std::move(observer)); }
Reply DeployQueue::rollback(std::optional<unsigned> generation, DeployObserver observer) {
    return impl_->rollback(generation, std::move(observer));
}
DeployStatus DeployQueue::status() const { return impl_->status(); }
std::vector<DeploymentStatus> DeployQueue::history(unsigned count) const { return impl_->history(count); }
void DeployQueue::shutdown() { impl_->shutdown(); }
void DeployQueue::abandon(const std::string& why) { impl_->abandon(why); }

} // namespace nixproc
