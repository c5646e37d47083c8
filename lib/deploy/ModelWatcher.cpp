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

struct ModelWatcher::Impl {
    Model model;
    std::chrono::milliseconds debounce;
    Changed changed;
    boost::asio::posix::stream_descriptor fd;
    boost::asio::steady_timer quiet;
    std::string folder_name;
    int folder_wd = -1, parent_wd = -1;
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
        wait();
    }

    void watchFolder() {
        folder_wd = ::inotify_add_watch(fd.native_handle(), model.folder().c_str(), kFolderEvents);
        if (folder_wd < 0 && errno != ENOENT)
            spdlog::warn("cannot watch {}: {}", model.folder(), std::strerror(errno));
        else if (folder_wd >= 0)
            spdlog::debug("watching {} for {}", model.folder(), fmt::join(model.fileNames(), ", "));
    }

    void wait() {
        fd.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
            if (ec) return;
            if (readEvents()) restartQuietPeriod();
            wait();
        });
    }

    // Says whether anything that concerns the model happened.
    bool readEvents() {
        bool touched = false;
        for (;;) {
            ssize_t n = ::read(fd.native_handle(), buffer, sizeof buffer);
            if (n <= 0) return touched;
            for (char* p = buffer; p < buffer + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                std::string name = e->len ? e->name : "";
                if (e->wd == folder_wd) {
                    if (e->mask & IN_IGNORED) { // the folder went away
                        folder_wd = -1;
                        touched = true;
                    } else if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
                        touched = true;
                    } else if (name == kConfigMapData || isModelFile(name)) {
                        touched = true;
                    }
                } else if (e->wd == parent_wd && name == folder_name) {
                    if (e->mask & (IN_CREATE | IN_MOVED_TO)) watchFolder(); // created again
                    touched = true;
                }
            }
        }
    }

    bool isModelFile(const std::string& name) const {
        auto names = model.fileNames();
        return std::find(names.begin(), names.end(), name) != names.end();
    }

    void restartQuietPeriod() {
        quiet.expires_after(debounce);
        quiet.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) changed();
        });
    }
};

ModelWatcher::ModelWatcher(boost::asio::io_context& io, Model model, std::chrono::milliseconds debounce, Changed changed)
    : impl_(std::make_unique<Impl>(io, std::move(model), debounce, std::move(changed))) {}

ModelWatcher::~ModelWatcher() = default;

} // namespace nixproc
