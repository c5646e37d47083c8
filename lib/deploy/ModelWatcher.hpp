#pragma once
// inotify on the model's folder (not on its files: editors replace them), and on the folder's
// parent (the folder itself may be removed and created again, or be a Kubernetes ConfigMap whose
// `..data` link is swapped). Any event naming a model file starts the debounce; when the saves
// have been quiet for debounce_ms, `changed` runs once. Editor temp and lock files never match.
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
    ~ModelWatcher();
    ModelWatcher(const ModelWatcher&) = delete;
    ModelWatcher& operator=(const ModelWatcher&) = delete;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace nixproc
