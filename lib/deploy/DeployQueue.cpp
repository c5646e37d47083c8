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
#include <spdlog/spdlog.h>

extern char** environ;

namespace nixproc {

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;


struct Request {
    std::string trigger; // boot | watch | signal | retry
    bool force = false;  // deploy even when the model is as last deployed
    std::vector<std::string> changed; // watch: what the saves changed (ModelWatcher's names)
};

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
    bool ready = false, stopped = false;
    std::optional<Request> pending;       // what to deploy after the running one (or once ready)
    std::shared_ptr<ChildJob> job;        // the step of the running deployment
    std::optional<DeploymentRecord> current;
    std::string model_copy;               // the running deployment's copy of processes.nix
    bool switch_ran = false;              // the running deployment got as far as the switch
    std::string profile_before;           // the profile's generation when the switch started
    std::string rollback_hint;            // "nixproc-sysvinit-switch -p web --rollback", "" for another command
    bool invocation_noted = false;        // SwitchInvocation::notes are said once
    Clock::time_point next_channel_try{};  // no channel set-up before this, after a failure
    std::chrono::seconds channel_backoff = config.deploy.retry_backoff;
    Clock::time_point started;
    std::optional<ProfileSnapshot> before;
    boost::asio::steady_timer retry_timer{io};
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
            stopped = true;
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
                    request({"watch", false, changed});
                });
            } catch (const std::exception& e) {
                spdlog::error("cannot watch {}: {}; edits will not be deployed until SIGHUP", model.path, e.what());
            }
        }
    }

    ~Impl() {
        if (temp_folder.empty()) return;
        std::error_code ec;
        std::filesystem::remove_all(temp_folder, ec);
    }

    void managerReady() {
        ready = true;
        if (stopped) return;
        // The last deployment never ended (the init was killed or stopped in it): whatever the
        // model's fingerprint says, what runs may be half of it.
        if (state.lastUnfinished() && config.deploy.on_boot != OnBoot::Never) {
            spdlog::info("deploy #{} did not finish ({}): deploying again", state.deployments.back().number,
                         state.deployments.back().outcome);
            request({"boot", true});
            return;
        }
        switch (config.deploy.on_boot) {
        case OnBoot::Never: break;
        case OnBoot::First:
            if (!state.bootstrapped) request({"boot", true});
            break;
        case OnBoot::Changed:
            if (!state.bootstrapped || model.fingerprint() != state.deployed_fingerprint) request({"boot", true});
            else spdlog::info("{} unchanged since deployment #{}: nothing to deploy at boot", model.fileName(), lastSuccess());
            break;
        case OnBoot::Always: request({"boot", true}); break;
        }
        if (pending && !current) startNext();
    }

    unsigned lastSuccess() const {
        for (auto it = state.deployments.rbegin(); it != state.deployments.rend(); ++it)
            if (it->outcome == "succeeded") return it->number;
        return 0;
    }

    void request(Request r) {
        if (stopped) return;
        // Coalesce: one follow-up, which reads the latest content when it starts; a forced
        // request (SIGHUP, boot, retry) is never downgraded by a plain save.
        if (pending && pending->trigger == "watch" && r.trigger == "watch") // both named in the follow-up
            for (const auto& what : r.changed)
                if (pending->changed.size() < ModelWatcher::kMaxChangesKept &&
                    std::find(pending->changed.begin(), pending->changed.end(), what) == pending->changed.end())
                    pending->changed.push_back(what);
        if (!pending || r.force) pending = r;
        if (!ready) return;
        if (current) {
            spdlog::info("deploy #{}: still running; {} will be deployed after it", current->number, model.fileName());
            return;
        }
        startNext();
    }

    std::string triggerText(const Request& r) const {
        const std::string& trigger = r.trigger;
        if (trigger == "boot") return state.bootstrapped ? "at boot" : "first deployment";
        if (trigger == "watch") return watch::describeChanges(r.changed) + " changed";
        if (trigger == "retry") return "trying again (" + std::to_string(retries_done) + " of " + std::to_string(config.deploy.retries) + ")";
        return "asked for by SIGHUP";
    }

    void startNext() {
        if (!pending || stopped || current) return;
        // Saves are still coming in: the file may be half-written. The watcher calls back once
        // they have been quiet for the debounce, and the follow-up starts then.
        if (watcher && watcher->settling()) return;
        Request r = *pending;
        pending.reset();
        // Read once: this content is fingerprinted, checked for trust, and copied to where the
        // check and the switch read it. Later saves cannot slip into this deployment.
        auto read = model.read();
        if (!read.snapshot) {
            if (read.error.missing) spdlog::warn("{}: {}: nothing to deploy", triggerText(r), read.error.message);
            else spdlog::error("{}: cannot read the model: {}; nothing deployed", triggerText(r), read.error.message);
            return;
        }
        const ModelSnapshot& snapshot = *read.snapshot;
        if (!r.force && snapshot.fingerprint == state.deployed_fingerprint) {
            spdlog::info("{} saved, unchanged since deployment #{}: nothing to do", model.fileName(), lastSuccess());
            return;
        }
        ++retry_round; // a retry still scheduled is covered by this deployment
        switch_ran = false;
        if (r.trigger != "retry") retries_done = 0;
        current = DeploymentRecord{.number = state.nextNumber(), .trigger = r.trigger, .fingerprint = snapshot.fingerprint,
                                   .started = StateStore::now(), .outcome = "running"};
        started = Clock::now();
        state.add(*current);
        spdlog::info("deploy #{}: {}", current->number, triggerText(r));
        if (!snapshot.insecurity.empty()) {
            if (!config.deploy.allow_insecure_model)
                return finish("refused", std::nullopt,
                              snapshot.insecurity + ": whoever can write the model runs code as root through the switch "
                                                    "(fix the permissions, or set deploy.allow_insecure_model)");
            spdlog::warn("deploy #{}: {} (allowed by deploy.allow_insecure_model)", current->number, snapshot.insecurity);
        }
        try {
            if (copy_folder.empty()) throw std::runtime_error("no private folder for the model's copy");
            model_copy = snapshot.writeTo(copy_folder, model.fileName());
        } catch (const std::exception& e) {
            return finish("failed", std::nullopt, "cannot copy the model: " + std::string(e.what()));
        }
        spdlog::debug("{}: deploying the copy of {} in {}", prefix(), model.folder(), copy_folder);
        record();
        bootstrapChannel([this] { checkModel(); });
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
        auto argv = config.deploy.check;
        argv.push_back(model_copy);
        run({.argv = argv, .log_prefix = prefix() + " check |", .output_only_on_failure = true},
            [this, program = argv.front()](const JobResult& r) {
            if (r.ok()) return switchModel();
            if (!r.started) return finish(shortOfResources(r) ? "interrupted" : "failed", r.exit_code, "deploy.check: " + r.description);
            if (killedFromOutside(r)) return finish("interrupted", r.exit_code, "deploy.check (" + program + ") was " + killedHow(r));
            // Its status does not tell a model that does not evaluate from a machine that cannot
            // evaluate it (out of memory, no permission on /nix): its output does.
            finish("failed", r.exit_code,
                   "deploy.check failed: " + program + " " + r.description + (r.last_line.empty() ? "" : " (its output above says why)") +
                       ": not switching");
        });
    }

    void switchModel() {
        before = manager.inventory(config.profile);
        switch_ran = true;
        profile_before = profileTarget();
        SwitchInvocation invocation = switchInvocation(config, manager, model_copy, environmentMap(environ));
        rollback_hint = invocation.rollback_command;
        if (!invocation_noted) {
            for (const auto& note : invocation.notes) spdlog::warn("{}: {}", prefix(), note);
            invocation_noted = true;
        }
        run({.argv = invocation.argv, .environment = invocation.environment, .log_prefix = prefix() + " |",
             .keep_group_on_success = manager.switchStartsServices()},
            [this](const JobResult& r) {
            if (auto after = manager.inventory(config.profile); before && after) {
                current->plan = diffProfiles(*before, *after).describe();
                spdlog::info("{}: {}", prefix(), current->plan);
            }
            if (r.ok()) return finish("succeeded", 0, "");
            if (!r.started) {
                switch_ran = false; // nothing was touched
                return finish(shortOfResources(r) ? "interrupted" : "failed", r.exit_code, r.description);
            }
            if (killedFromOutside(r))
                return finish("interrupted", r.exit_code, config.deployCommand().front() + " was " + killedHow(r));
            finish(r.timed_out ? "timed out" : "failed", r.exit_code,
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
            if (stopped && current) return finish("interrupted", r.exit_code, "stopped by the shutdown");
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
        return profile + ", but services may be partly updated (the switch's output above says which); the next "
                         "change or SIGHUP deploys again" +
               (rollback_hint.empty() ? "" : ", `" + rollback_hint + "` goes back to the previous generation");
    }

    // The state file first, then the log line: whoever reads the log may rely on the record.
    void finish(const std::string& outcome, std::optional<int> exit_code, const std::string& why) {
        double secs = std::chrono::duration<double>(Clock::now() - started).count();
        current->outcome = outcome;
        current->exit_code = exit_code;
        current->ended = StateStore::now();
        if (outcome == "succeeded") {
            state.bootstrapped = true;
            state.deployed_fingerprint = current->fingerprint;
            retries_done = 0;
        }
        record();
        if (outcome == "succeeded") spdlog::info("{}: done in {:.1f} s", prefix(), secs);
        else spdlog::error("{}: {} after {:.1f} s: {}; {}", prefix(), outcome, secs, why, servicesAfterFailure());
        current.reset();
        if (outcome == "timed out" || outcome == "interrupted") scheduleRetry();
        else if (outcome != "succeeded" && !stopped) spdlog::info("the next change of the model (or SIGHUP) deploys again");
        startNext();
    }

    // Timed out or interrupted: the model may be fine and the machine busy, so try again later,
    // each time waiting twice as long, a bounded number of times. A failed check or a switch that
    // exited non-zero is the model's fault: it waits for the next change.
    void scheduleRetry() {
        if (stopped) return;
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
            request({"retry", true});
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

    void shutdown() {
        stopped = true;
        watcher.reset();
        pending.reset();
        ++retry_round;
        retry_timer.cancel();
        if (job) job->stop();
    }

    // The init is about to exit: the job's completion will never run (the loop stops), so the
    // deployment is ended here, recorded first and logged second; the job's completion, should it
    // still be queued, finds no deployment of its number and does nothing.
    void abandon(const std::string& why) {
        if (!stopped) shutdown();
        if (!current) return;
        job.reset();
        finish("interrupted", std::nullopt, why);
    }
};

DeployQueue::DeployQueue(boost::asio::io_context& io, const Spawner& spawner, Reaper& reaper, const Config& config,
                         const ProcessManager& manager)
    : impl_(std::make_unique<Impl>(io, spawner, reaper, config, manager)) {}

DeployQueue::~DeployQueue() = default;

void DeployQueue::managerReady() { impl_->managerReady(); }
void DeployQueue::deployNow() { impl_->request({"signal", true}); }
void DeployQueue::shutdown() { impl_->shutdown(); }
void DeployQueue::abandon(const std::string& why) { impl_->abandon(why); }

} // namespace nixproc
