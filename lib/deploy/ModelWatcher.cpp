#include "deploy/ModelWatcher.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/ranges.h>
#include <filesystem>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <system_error>
#include <unistd.h>

namespace nixproc {

namespace {
constexpr uint32_t kFolderEvents = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                   IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
constexpr uint32_t kParentEvents = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR;
constexpr const char* kConfigMapData = "..data"; // the kubelet swaps this link to publish an update
} // namespace

struct ModelWatcher::Impl : std::enable_shared_from_this<Impl> {
    Model model;
    std::chrono::milliseconds debounce;
    Changed changed;
    boost::asio::posix::stream_descriptor fd;
    boost::asio::steady_timer quiet;
    std::string folder_name;
    int folder_wd = -1, parent_wd = -1;
    bool settling = false; // the quiet timer runs
    alignas(inotify_event) char buffer[16 * 1024];

    Impl(boost::asio::io_context& io, Model m, std::chrono::milliseconds d, Changed c)
        : model(std::move(m)), debounce(d), changed(std::move(c)), fd(io), quiet(io) {
        int ifd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (ifd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
        fd.assign(ifd);
        std::filesystem::path folder(model.folder());
        folder_name = folder.filename().string();
        parent_wd = ::inotify_add_watch(ifd, folder.parent_path().c_str(), kParentEvents);
        if (parent_wd < 0) spdlog::warn("cannot watch {}: {}", folder.parent_path().string(), std::strerror(errno));
        watchFolder();
    }

    void watchFolder() {
        folder_wd = ::inotify_add_watch(fd.native_handle(), model.folder().c_str(), kFolderEvents);
        if (folder_wd < 0 && errno != ENOENT)
            spdlog::warn("cannot watch {}: {}", model.folder(), std::strerror(errno));
        else if (folder_wd >= 0)
            spdlog::debug("watching {} for *.nix and {}", model.folder(), fmt::join(model.extra, ", "));
    }

    // A completion already queued when the watcher is destroyed still runs (cancelling does not
    // recall it): handlers hold the Impl weakly and do nothing once it is gone.
    void wait() {
        fd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                      [weak = weak_from_this()](const boost::system::error_code& ec) {
                          auto self = weak.lock();
                          if (ec || !self) return;
                          if (auto what = self->readEvents(); !what.empty()) self->restartQuietPeriod(what);
                          self->wait();
                      });
    }

    // What of the model changed (a file name, or the folder), "" if nothing did.
    std::string readEvents() {
        std::string touched;
        for (;;) {
            ssize_t n = ::read(fd.native_handle(), buffer, sizeof buffer);
            if (n <= 0) return touched;
            for (char* p = buffer; p < buffer + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                std::string name = e->len ? e->name : "";
                if (e->mask & IN_Q_OVERFLOW) {
                    // Events were dropped: any of them may have been a save, or the folder's
                    // replacement. Watch the folder anew (the same wd if it is the same) and let
                    // the fingerprint decide, like watchman's recrawl.
                    spdlog::warn("inotify queue overflow on {}: treating it as a change", model.folder());
                    watchFolder();
                    touched = model.folder();
                } else if (e->wd == folder_wd) {
                    if (e->mask & IN_IGNORED) { // the folder went away
                        folder_wd = -1;
                        touched = model.folder();
                    } else if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
                        touched = model.folder();
                    } else if (name == kConfigMapData || isModelFile(name)) {
                        touched = name;
                    }
                } else if (e->wd == parent_wd && name == folder_name) {
                    if (e->mask & (IN_CREATE | IN_MOVED_TO)) watchFolder(); // created again
                    touched = model.folder();
                }
            }
        }
    }

    bool isModelFile(const std::string& name) const { return model.isModelFile(name); }

    void restartQuietPeriod(const std::string& what) {
        spdlog::debug("{} saved: deploying after {} ms of quiet", what, debounce.count());
        settling = true;
        quiet.expires_after(debounce);
        quiet.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
            auto self = weak.lock();
            if (ec || !self) return;
            self->settling = false;
            self->changed();
        });
    }
};

ModelWatcher::ModelWatcher(boost::asio::io_context& io, Model model, std::chrono::milliseconds debounce, Changed changed)
    : impl_(std::make_shared<Impl>(io, std::move(model), debounce, std::move(changed))) {
    impl_->wait();
}

ModelWatcher::~ModelWatcher() = default;

bool ModelWatcher::settling() const { return impl_->settling; }

} // namespace nixproc
