#include "deploy/DeployQueue.hpp"

#include "deploy/Model.hpp"
#include "deploy/ModelWatcher.hpp"
#include "deploy/ProfileDiff.hpp"
#include "deploy/StateStore.hpp"
#include "process/ChildJob.hpp"

#include <boost/asio/io_context.hpp>

#include <map>
#include <optional>
#include <spdlog/spdlog.h>

extern char** environ;

namespace nixproc {

namespace {

using Clock = std::chrono::steady_clock;

struct Request {
    std::string trigger; // boot | watch | signal
    bool force = false;  // deploy even when the model is as last deployed
};

} // namespace

struct DeployQueue::Impl {
    boost::asio::io_context& io;
    const Spawner& spawner;
    Reaper& reaper;
    const Config& config;
    const ProcessManager& manager;
    Model model{config.processes, config.watch.extra};
    StateStore store{config.state_dir};
    DeployState state;
    std::optional<ModelWatcher> watcher;
    bool ready = false, stopped = false;
    std::optional<Request> pending;       // what to deploy after the running one (or once ready)
    std::shared_ptr<ChildJob> job;        // the step of the running deployment
    std::optional<DeploymentRecord> current;
    Clock::time_point started;
    ProfileSnapshot before;

    Impl(boost::asio::io_context& i, const Spawner& s, Reaper& r, const Config& c, const ProcessManager& m)
        : io(i), spawner(s), reaper(r), config(c), manager(m) {
        if (auto why = store.lock(); !why.empty()) {
            // The services still run; only deploying from a shared state folder is refused.
            spdlog::error("state folder {}: {}; deployments are off", config.state_dir, why);
            stopped = true;
            return;
        }
        try {
            state = store.load();
        } catch (const std::exception& e) {
            spdlog::error("{}; deploying as on a first boot", e.what());
        }
        if (config.watch.enabled) {
            try {
                watcher.emplace(io, model, config.watch.debounce, [this] { request({"watch", false}); });
            } catch (const std::exception& e) {
                spdlog::error("cannot watch {}: {}; edits will not be deployed until SIGHUP", model.path, e.what());
            }
        }
    }

    void managerReady() {
        ready = true;
        auto fingerprint = model.fingerprint();
        switch (config.deploy.on_boot) {
        case OnBoot::Never: break;
        case OnBoot::First:
            if (!state.bootstrapped) request({"boot", true});
            break;
        case OnBoot::Changed:
            if (!state.bootstrapped || fingerprint != state.deployed_fingerprint) request({"boot", true});
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
        if (!ready || current) {
            // Coalesce: one follow-up, which reads the latest content when it starts.
            if (!pending || r.force) pending = r;
            if (current) spdlog::info("deploy #{}: still running; {} will be deployed after it", current->number, model.fileName());
            return;
        }
        pending = r;
        startNext();
    }

    void startNext() {
        if (!pending || stopped) return;
        Request r = *pending;
        pending.reset();
        auto fingerprint = model.fingerprint();
        if (!fingerprint) {
            spdlog::warn("{} is missing or unreadable: nothing to deploy", model.path);
            return;
        }
        if (!r.force && *fingerprint == state.deployed_fingerprint) {
            spdlog::info("{} saved, unchanged since deployment #{}: nothing to do", model.fileName(), lastSuccess());
            return;
        }
        current = DeploymentRecord{.number = state.nextNumber(), .trigger = r.trigger, .fingerprint = *fingerprint,
                                   .started = StateStore::now(), .outcome = "running"};
        started = Clock::now();
        state.deployments.push_back(*current);
        spdlog::info("deploy #{}: {}", current->number, r.trigger == "boot"   ? (state.bootstrapped ? "at boot" : "first deployment")
                                                        : r.trigger == "watch" ? model.fileName() + " changed"
                                                                               : "asked for by SIGHUP");
        if (auto why = model.insecurity(); !why.empty()) {
            if (!config.deploy.allow_insecure_model)
                return finish("refused", std::nullopt,
                              why + ": whoever can write the model runs code as root through the switch (fix the "
                                    "permissions, or set deploy.allow_insecure_model)");
            spdlog::warn("deploy #{}: {} (allowed by deploy.allow_insecure_model)", current->number, why);
        }
        record();
        bootstrapChannel([this] { checkModel(); });
    }

    // nix-channel --add and --update once; a failure is logged and tried again next time.
    void bootstrapChannel(std::function<void()> then) {
        if (config.bootstrap.channel.empty() || state.channel_configured) return then();
        run({"nix-channel", "--add", config.bootstrap.channel}, "bootstrap |", config.deploy.timeout, {}, false,
            [this, then](const JobResult& added) {
                if (!added.ok()) {
                    spdlog::error("bootstrap: nix-channel --add {}: {}; will try again before the next deployment",
                                  config.bootstrap.channel, added.description);
                    return then();
                }
                run({"nix-channel", "--update"}, "bootstrap |", config.deploy.timeout, {}, false, [this, then](const JobResult& updated) {
                    if (updated.ok()) {
                        state.channel_configured = true;
                        spdlog::info("bootstrap: channel {} added and updated", config.bootstrap.channel);
                    } else {
                        spdlog::error("bootstrap: nix-channel --update: {}; will try again before the next deployment",
                                      updated.description);
                    }
                    then();
                });
            });
    }

    void checkModel() {
        if (config.deploy.check.empty()) return switchModel();
        auto argv = config.deploy.check;
        argv.push_back(model.path);
        run(argv, prefix() + " check |", config.deploy.timeout, {}, true, [this, program = argv.front()](const JobResult& r) {
            if (r.ok()) return switchModel();
            finish("failed", r.exit_code,
                   "the model does not pass deploy.check (" + program + " " + r.description + "): not switching");
        });
    }

    void switchModel() {
        auto layout = manager.layout();
        if (layout) before = readProfile(config.profile, *layout);
        run(config.deployCommand(), prefix() + " |", config.deploy.timeout, switchEnvironment(), false, [this, layout](const JobResult& r) {
            if (layout) {
                current->plan = diffProfiles(before, readProfile(config.profile, *layout)).describe();
                spdlog::info("{}: {}", prefix(), current->plan);
            }
            if (r.ok()) return finish("succeeded", 0, "");
            finish(r.timed_out ? "timed out" : "failed", r.exit_code,
                   config.deployCommand().front() + " " + r.description +
                       (r.timed_out ? " after deploy.timeout_s " + std::to_string(config.deploy.timeout.count()) + " s" : ""));
        });
    }

    std::vector<std::string> switchEnvironment() const {
        std::map<std::string, std::string> env = environmentMap(environ);
        env["NIXPROC_PROCESSES"] = model.path;
        for (const auto& kv : manager.deployEnvironment()) env[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
        std::vector<std::string> out;
        for (const auto& [k, v] : env) out.push_back(k + "=" + v);
        return out;
    }

    void run(std::vector<std::string> argv, std::string log_prefix, std::chrono::seconds timeout,
             std::vector<std::string> env, bool output_only_on_failure, std::function<void(const JobResult&)> done) {
        job = ChildJob::start(io, spawner, reaper,
                              {.argv = std::move(argv), .environment = std::move(env), .log_prefix = std::move(log_prefix),
                               .timeout = timeout, .kill_after = config.shutdown.grace,
                               .output_only_on_failure = output_only_on_failure},
                              [this, done = std::move(done)](const JobResult& r) {
                                  job.reset();
                                  if (stopped && current) return finish("interrupted", r.exit_code, "stopped by the shutdown");
                                  done(r);
                              });
    }

    std::string prefix() const { return "deploy #" + std::to_string(current->number); }

    // The state file first, then the log line: whoever reads the log may rely on the record.
    void finish(const std::string& outcome, std::optional<int> exit_code, const std::string& why) {
        double secs = std::chrono::duration<double>(Clock::now() - started).count();
        current->outcome = outcome;
        current->exit_code = exit_code;
        current->ended = StateStore::now();
        if (outcome == "succeeded") {
            state.bootstrapped = true;
            state.deployed_fingerprint = current->fingerprint;
        }
        record();
        if (outcome == "succeeded") spdlog::info("{}: done in {:.1f} s", prefix(), secs);
        else spdlog::error("{}: {} after {:.1f} s: {}; the running services are as they were", prefix(), outcome, secs, why);
        current.reset();
        startNext();
    }

    void record() {
        if (current) state.deployments.back() = *current;
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
        if (job) job->stop();
    }
};

DeployQueue::DeployQueue(boost::asio::io_context& io, const Spawner& spawner, Reaper& reaper, const Config& config,
                         const ProcessManager& manager)
    : impl_(std::make_unique<Impl>(io, spawner, reaper, config, manager)) {}

DeployQueue::~DeployQueue() = default;

void DeployQueue::managerReady() { impl_->managerReady(); }
void DeployQueue::deployNow() { impl_->request({"signal", true}); }
void DeployQueue::shutdown() { impl_->shutdown(); }

} // namespace nixproc
