#pragma once
// inotify on the model's folder (not on its files: editors replace them), and on the folder's
// parent (the folder itself may be removed and created again, or be a Kubernetes ConfigMap whose
// `..data` link is swapped). Any event naming a model file starts the debounce; when the saves
// have been quiet for debounce_ms, `changed` runs once. Editor temp and lock files never match.
// A queue overflow (events were lost) counts as a change: the fingerprint decides.
#include "deploy/Model.hpp"

#include <chrono>
#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace nixproc {

class ModelWatcher {
public:
    using Changed = std::function<void()>;

    // Throws std::system_error when inotify cannot be set up.
    ModelWatcher(boost::asio::io_context& io, Model model, std::chrono::milliseconds debounce, Changed changed);
    // After this, `changed` is never called, even for a quiet period that ended before.
    ~ModelWatcher();
    ModelWatcher(const ModelWatcher&) = delete;
    ModelWatcher& operator=(const ModelWatcher&) = delete;

    // Saves were seen less than debounce_ms ago: the model may be half-written, and `changed`
    // will follow once they are quiet.
    bool settling() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_; // handlers hold it weakly: none runs on a destroyed watcher
};

} // namespace nixproc
