#include "deploy/ModelWatcher.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fmt/ranges.h>
#include <optional>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <system_error>
#include <unistd.h>

namespace nixproc {

namespace fs = std::filesystem;

namespace watch {
namespace {

constexpr const char* kConfigMapData = "..data"; // the kubelet swaps this link to publish an update

int levelOf(const std::string& relative) {
    return relative.empty() ? 0 : static_cast<int>(std::count(relative.begin(), relative.end(), '/')) + 1;
}

std::string join(const std::string& relative, const std::string& name) {
    return relative.empty() ? name : relative + "/" + name;
}

} // namespace

std::string describeChanges(const std::vector<std::string>& changed) {
    if (changed.empty()) return "the model";
    std::vector<std::string> names = changed;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::size_t shown = std::min(names.size(), kShownChanges);
    std::string text = fmt::format("{}", fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), ", "));
    if (names.size() > shown)
        text += " and " + std::to_string(names.size() - shown) + (names.size() >= ModelWatcher::kMaxChangesKept ? " or more" : " more");
    return text;
}

WatchSet::WatchSet(Folders& folders, Model model, Warn warn)
    : folders_(folders), model_(std::move(model)), warn_(std::move(warn)),
      folder_name_(fs::path(model_.folder()).filename().string()) {}

void WatchSet::start() {
    std::string parent = fs::path(model_.folder()).parent_path().string();
    parent_id_ = folders_.add(parent, Folders::Role::Parent);
    if (parent_id_ == -ENOSPC) noRoom(parent);
    else if (parent_id_ < 0) warnOnce(parent, "cannot watch " + parent + ": " + std::strerror(-parent_id_));
    rescan();
    endBatch();
    spdlog::debug("watching {} and {} folders below it for *.nix{}{}", model_.folder(), ids_.empty() ? 0 : ids_.size() - 1,
                  model_.extra.empty() ? "" : " and ", fmt::join(model_.extra, ", "));
}

std::string WatchSet::absolute(const std::string& relative) const {
    return relative.empty() ? model_.folder() : model_.folder() + "/" + relative;
}

void WatchSet::warnOnce(const std::string& folder, const std::string& message) {
    if (warned_.size() >= kMaxModelFiles || !warned_.insert(folder).second) return;
    warn_(message);
}

void WatchSet::noRoom(const std::string& path) {
    if (no_room_++ == 0) first_no_room_ = path;
}

void WatchSet::endBatch() {
    if (no_room_ == 0) return;
    // Each folder failing would be one line each (a thousand at start in a big model, and one for
    // every folder created later): counted instead, and said once for the crawl or the batch.
    warn_("cannot watch " + std::to_string(no_room_) + (no_room_ == 1 ? " folder" : " folders") + " of the model in " +
          model_.folder() + " (the first: " + first_no_room_ + "): " + std::strerror(ENOSPC) +
          ": inotify's watch limit is reached; saves in them are not deployed until sysctl fs.inotify.max_user_watches "
          "is raised and the init restarted");
    no_room_ = 0;
    first_no_room_.clear();
}

void WatchSet::warnTooDeep(const std::string& path) {
    warnOnce(path, path + ": not watched, more than " + std::to_string(kMaxModelDepth - 1) + " folders below " + model_.folder() +
                       ": its files are not part of the model");
}

// Crawled anew (start, overflow, the model's folder replaced): a folder still there keeps its
// watch (inotify gives the same one back), so no event is missed while crawling.
void WatchSet::rescan() {
    Ids ids;
    Paths paths;
    full_warned_ = false; // crawled again: said again if still too many
    crawl("", ids, paths);
    for (const auto& [id, relative] : paths_)
        if (!paths.contains(id)) folders_.remove(id);
    ids_ = std::move(ids);
    paths_ = std::move(paths);
    watchFiles();
}

void WatchSet::watchFiles() {
    watchFile(model_.fileName());
    for (const auto& name : model_.extra)
        if (model_.isModelFile(name) && name.find('/') == std::string::npos) watchFile(name);
}

void WatchSet::watchFile(const std::string& name) {
    std::string path = model_.folder() + "/" + name;
    int before = fileIdOf(name);
    // Watched before it is identified: a save in between is an event of the file watched.
    // Only a regular file (a link to one, in a ConfigMap): a watch added again replaces its mask,
    // and a folder of that name is watched as a folder.
    std::error_code ec;
    int id = fs::is_regular_file(path, ec) ? folders_.add(path, Folders::Role::File) : -ENOENT;
    auto identity = id >= 0 ? folders_.identify(path) : std::nullopt;
    if (before >= 0 && before != id) { // another file now, or none: the old one's watch goes
        folders_.remove(before);
        files_.erase(before);
    }
    if (id >= 0 && (!identity || paths_.contains(id))) { // gone since, or a folder now
        if (!paths_.contains(id)) folders_.remove(id);
        files_.erase(id);
        return;
    }
    // Not there (its folder says when it comes), or no watch left (ENOSPC, not counted with the
    // folders: its folder's watch still sees every save but those through a single-file mount).
    if (id < 0) return;
    files_[id] = WatchedFile{name, identity->dev, identity->ino};
    if (identity->mount_root)
        warnOnce(path + " (mounted)",
                 path + " is a single-file bind mount: saves that write it in place (from the host or in here) are "
                        "deployed, but a save that replaces it on the host (most editors, sed -i) is not seen through "
                        "the mount, which keeps the old file; bind-mount the folder instead (" + model_.folder() +
                        "), or restart after such a save");
}

std::string WatchSet::fileEvent(int id, Event::Kind kind) {
    WatchedFile file = files_.at(id);
    std::string path = model_.folder() + "/" + file.name;
    if (kind == Event::Kind::Dropped) { // the file is no more (or unmounted): watch what is there now
        files_.erase(id);
        watchFile(file.name);
        return "";
    }
    auto now = folders_.identify(path);
    bool same = now && now->dev == file.dev && now->ino == file.ino;
    // The name still leads to the file watched after it lost its last link, or after it was moved:
    // only a mount keeps it there. What was saved on the host is out of reach until a restart.
    // What is written to the old file from here still counts (the fingerprint decides).
    if (same && (now->links == 0 || (kind == Event::Kind::Gone && now->mount_root)))
        warnOnce(path + " (replaced)",
                 path + " was replaced or removed on the host: this container still sees the old file through its "
                        "single-file bind mount, so what was saved there is not deployed; restart the container (or "
                        "the init), and bind-mount the folder " + model_.folder() + " instead, where every save is seen");
    if (same) return kind == Event::Kind::Gone ? "" : file.name; // written in place, or chmod'ed
    watchFile(file.name); // replaced or removed in its folder: what is there now is watched
    return file.name;
}

WatchSet::Crawled WatchSet::crawl(const std::string& relative, Ids& ids, Paths& paths) {
    Crawled crawled;
    std::deque<std::string> queue{relative};
    while (!queue.empty()) {
        std::string at = std::move(queue.front());
        queue.pop_front();
        std::string path = absolute(at);
        if (!ids.contains(at) && ids.size() >= kMaxModelFiles) {
            // Breadth first: the shallow folders, where models keep their modules, are watched.
            // Said once while the set is full, naming the first folder left out.
            if (!full_warned_)
                warn_(path + ": not watched, " + model_.folder() + " has more than " + std::to_string(kMaxModelFiles) +
                      " folders; saves there are not deployed until SIGHUP");
            full_warned_ = true;
            break;
        }
        // Watched before it is listed: what is saved meanwhile is an event or in the listing.
        int id = folders_.add(path, at.empty() ? Folders::Role::Model : Folders::Role::Sub);
        if (id < 0) {
            // Gone (or a symlink now) since it was listed: its parent says so in an event. Not
            // readable (EACCES): named once; its parent's IN_ATTRIB says when it may be.
            if (id == -ENOSPC) noRoom(path);
            else if (id != -ENOENT && id != -ENOTDIR) warnOnce(path, "cannot watch " + path + ": " + std::strerror(-id));
            continue;
        }
        bool watched_before = ids.contains(at) && ids.at(at) == id;
        // A folder of the same name was there before (replaced by one moved in): its watches go.
        if (auto before = ids.find(at); before != ids.end() && before->second != id) drop(at, ids, paths, id);
        // The same folder under a new name (its move was lost in an overflow): the old name goes.
        if (auto known = paths.find(id); known != paths.end() && known->second != at) drop(known->second, ids, paths, id);
        ids[at] = id;
        paths[id] = at;
        if (at.empty()) {
            auto identity = folders_.identify(path);
            folder_dev_ = identity ? identity->dev : 0;
            folder_ino_ = identity ? identity->ino : 0;
        }

        int level = levelOf(at);
        std::vector<std::string> subs;
        std::error_code ec;
        bool found = false;
        for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
            std::string name = it->path().filename().string();
            std::error_code type_ec;
            if (it->symlink_status(type_ec).type() != fs::file_type::directory) {
                found = found || (level == 0 ? model_.isModelFile(name) : name.ends_with(".nix") && model_.isModelFile(name));
            } else if (isModelFolder(name, level + 1)) {
                subs.push_back(join(at, name));
            } else if (isModelFolder(name, 1)) { // not hidden: too deep
                warnTooDeep(path + "/" + name);
            }
        }
        crawled.found = crawled.found || found;
        crawled.found_new = crawled.found_new || (found && !watched_before);
        std::sort(subs.begin(), subs.end());
        queue.insert(queue.end(), subs.begin(), subs.end());
    }
    return crawled;
}

bool WatchSet::drop(const std::string& relative, Ids& ids, Paths& paths, int keep) {
    auto forget = [&](Ids::iterator it) {
        if (it->second != keep) folders_.remove(it->second);
        paths.erase(it->second);
        return ids.erase(it);
    };
    bool had = false;
    if (auto it = ids.find(relative); it != ids.end()) {
        forget(it);
        had = true;
    }
    // Below it: "a/..." sorts together (but after "a-b", so not right after "a").
    std::string prefix = relative.empty() ? "" : relative + "/";
    for (auto it = ids.lower_bound(prefix); it != ids.end() && it->first.starts_with(prefix);) {
        it = forget(it);
        had = true;
    }
    return had;
}

std::string WatchSet::handle(const Event& event) {
    using Kind = Event::Kind;
    if (event.kind == Kind::Overflow) {
        // Any of the lost events may have been a save, or a folder coming or going: crawl again,
        // and let the fingerprint decide, like watchman's recrawl.
        warn_("inotify queue overflow on " + model_.folder() + ": treating it as a change");
        rescan();
        return model_.folder();
    }
    if (files_.contains(event.id)) return fileEvent(event.id, event.kind);
    if (event.id == parent_id_) {
        // The trust check covers the parent's mode and owner: a deployment refused for them is
        // tried again once they change.
        if (event.kind == Kind::Self) return model_.folder();
        if (event.kind == Kind::Dropped) parent_id_ = -1;
        if (event.name != folder_name_) return "";
        if (event.kind == Kind::FolderAttrib) { // chmod'ed: may be readable now, as a sub-folder's below
            crawl("", ids_, paths_);
            watchFiles();
            return model_.folder(); // ...and the trust check covers it
        }
        rescan(); // the model's folder came or went: watch what is there now
        return model_.folder();
    }
    auto known = paths_.find(event.id);
    if (known == paths_.end()) return ""; // the last events of a watch already dropped
    std::string at = known->second;
    int level = levelOf(at);
    switch (event.kind) {
    case Kind::Self: // the folder's own mode or owner: the trust check covers the model's folder
        return at.empty() ? model_.folder() : "";
    case Kind::Entry:
        if (level == 0 && (event.name == model_.fileName() ||
                           std::find(model_.extra.begin(), model_.extra.end(), event.name) != model_.extra.end()) &&
            model_.isModelFile(event.name))
            watchFile(event.name); // created, or replaced: its watch follows the name
        if (level == 0 && (event.name == kConfigMapData || model_.isModelFile(event.name))) return event.name;
        if (level > 0 && event.name.ends_with(".nix") && model_.isModelFile(event.name)) return join(at, event.name);
        return "";
    case Kind::FolderIn: {
        std::string sub = join(at, event.name);
        if (!isModelFolder(event.name, level + 1)) {
            if (isModelFolder(event.name, 1)) warnTooDeep(absolute(sub)); // not hidden: too deep
            return "";
        }
        int before = idOf(sub);
        // A folder created empty changes nothing; one moved in with model files does, and so
        // does a file saved into a new folder before its watch was added (the listing finds it),
        // and a folder moved in over one of the same name.
        bool found = crawl(sub, ids_, paths_).found;
        return found || (before >= 0 && before != idOf(sub)) ? sub + "/" : "";
    }
    case Kind::FolderOut: {
        if (!isModelFolder(event.name, level + 1)) return "";
        std::string sub = join(at, event.name);
        // Moved away, it is no longer part of the model: its watch goes (it would follow the folder
        // elsewhere), and if it was moved within the model, the FolderIn that follows adds it anew.
        drop(sub, ids_, paths_);
        return sub + "/";
    }
    case Kind::Gone:
        if (at.empty()) {
            // Moved on the host while bind-mounted here: the mount keeps it (and its watch) at its
            // path, and what is created at the host's path is out of reach until a restart.
            auto now = folders_.identify(model_.folder());
            if (now && now->mount_root && now->dev == folder_dev_ && now->ino == folder_ino_) {
                warnOnce(model_.folder() + " (moved)",
                         "the folder " + model_.folder() + " was moved or removed on the host: this container still "
                         "sees the old folder through its bind mount, and saves at its old path on the host are not "
                         "seen; restart the container (or the init)");
                return "";
            }
        }
        [[fallthrough]];
    case Kind::Dropped:
        drop(at, ids_, paths_);
        return at.empty() ? model_.folder() : at + "/";
    case Kind::FolderAttrib: {
        // Its mode or owner changed: a folder whose watch failed (not readable) may be readable
        // now, and the sub-folders of one watched may be within reach (it was not searchable).
        // Crawled again (the watches there are kept): model files in a folder watched only now
        // are a change, like a folder moved in.
        if (!isModelFolder(event.name, level + 1)) return "";
        std::string sub = join(at, event.name);
        return crawl(sub, ids_, paths_).found_new ? sub + "/" : "";
    }
    case Kind::Overflow:
        break;
    }
    return "";
}

std::vector<std::string> WatchSet::watched() const {
    std::vector<std::string> out;
    for (const auto& [relative, id] : ids_) out.push_back(relative);
    return out;
}

std::vector<std::string> WatchSet::watchedFiles() const {
    std::vector<std::string> out;
    for (const auto& [id, file] : files_) out.push_back(file.name);
    std::sort(out.begin(), out.end());
    return out;
}

int WatchSet::fileIdOf(const std::string& name) const {
    for (const auto& [id, file] : files_)
        if (file.name == name) return id;
    return -1;
}

int WatchSet::idOf(const std::string& relative) const {
    auto it = ids_.find(relative);
    return it == ids_.end() ? -1 : it->second;
}

QuietPeriod::QuietPeriod(boost::asio::io_context& io, std::chrono::milliseconds quiet, std::function<void()> changed)
    : state_(std::make_shared<State>(State{std::move(changed)})), quiet_(quiet), timer_(io) {}

void QuietPeriod::restart() {
    state_->settling = true;
    unsigned generation = ++state_->generation;
    timer_.expires_after(quiet_);
    timer_.async_wait([weak = std::weak_ptr<State>(state_), generation](const boost::system::error_code& ec) {
        auto state = weak.lock();
        if (ec || !state || state->generation != generation) return;
        state->settling = false;
        state->changed();
    });
}

} // namespace watch

namespace {

constexpr uint32_t kFolderEvents = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                   IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// IN_ATTRIB: the model's folder made readable (chmod) after its watch failed; the parent's own.
constexpr uint32_t kParentEvents = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR;
// A model file's own: written in place, chmod'ed, its link count changed (replaced or removed).
constexpr uint32_t kFileEvents = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

// The OS adapter: inotify watches, and their events as watch::Event.
class Inotify final : public watch::Folders {
public:
    explicit Inotify(boost::asio::io_context& io) : fd(io) {
        int ifd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (ifd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
        fd.assign(ifd);
    }

    int add(const std::string& path, Role role) override {
        uint32_t mask = role == Role::Parent ? kParentEvents
                        : role == Role::Model ? kFolderEvents
                        : role == Role::File  ? kFileEvents
                                              : kFolderEvents | IN_DONT_FOLLOW;
        int wd = ::inotify_add_watch(fd.native_handle(), path.c_str(), mask);
        return wd >= 0 ? wd : -errno;
    }

    void remove(int id) override { ::inotify_rm_watch(fd.native_handle(), id); } // EINVAL if the kernel dropped it

    std::optional<Identity> identify(const std::string& path) override {
        struct statx stx {};
        if (::statx(AT_FDCWD, path.c_str(), 0, STATX_BASIC_STATS, &stx) != 0) return std::nullopt;
        Identity id{makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino, stx.stx_nlink, false};
        if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) {
            id.mount_root = stx.stx_attributes & STATX_ATTR_MOUNT_ROOT;
        } else { // before Linux 5.8: a mount from another file system at least
            struct stat folder {};
            id.mount_root = ::stat(fs::path(path).parent_path().c_str(), &folder) == 0 && folder.st_dev != id.dev;
        }
        return id;
    }

    // Reads every event queued, in order; returns when none is left.
    template <typename Each>
    void drain(Each&& each) {
        for (;;) {
            ssize_t n = ::read(fd.native_handle(), buffer_, sizeof buffer_);
            if (n <= 0) return; // EAGAIN: all read
            for (char* p = buffer_; p < buffer_ + n;) {
                auto* e = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + e->len;
                if (auto event = translate(*e)) each(*event);
            }
        }
    }

    boost::asio::posix::stream_descriptor fd;

private:
    static std::optional<watch::Event> translate(const inotify_event& e) {
        using Kind = watch::Event::Kind;
        std::string name = e.len ? e.name : "";
        if (e.mask & IN_Q_OVERFLOW) return watch::Event{Kind::Overflow, -1, ""};
        if (e.mask & IN_IGNORED) return watch::Event{Kind::Dropped, e.wd, ""};
        if (e.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) return watch::Event{Kind::Gone, e.wd, ""};
        // The watched folder's or file's own: attributes, or a file written.
        if (name.empty()) return e.mask & (IN_ATTRIB | IN_MODIFY | IN_CLOSE_WRITE) ? std::optional(watch::Event{Kind::Self, e.wd, ""}) : std::nullopt;
        if (e.mask & IN_ISDIR) {
            if (e.mask & (IN_CREATE | IN_MOVED_TO)) return watch::Event{Kind::FolderIn, e.wd, name};
            if (e.mask & (IN_DELETE | IN_MOVED_FROM)) return watch::Event{Kind::FolderOut, e.wd, name};
            if (e.mask & IN_ATTRIB) return watch::Event{Kind::FolderAttrib, e.wd, name};
            return std::nullopt;
        }
        return watch::Event{Kind::Entry, e.wd, name};
    }

    alignas(inotify_event) char buffer_[16 * 1024];
};

} // namespace

struct ModelWatcher::Impl : std::enable_shared_from_this<Impl> {
    static constexpr std::size_t kMaxShown = 16; // names logged per wake-up (a storm of saves is one restart)
    Inotify os;
    watch::WatchSet set;
    // What changed since the quiet period began: handed to `changed` when it ends.
    std::shared_ptr<std::vector<std::string>> changes = std::make_shared<std::vector<std::string>>();
    watch::QuietPeriod quiet;

    Impl(boost::asio::io_context& io, Model model, std::chrono::milliseconds debounce, Changed changed)
        : os(io), set(os, std::move(model), [](const std::string& message) { spdlog::warn("{}", message); }),
          quiet(io, debounce, [changes = changes, changed = std::move(changed)] {
              std::vector<std::string> what = std::move(*changes);
              changes->clear();
              std::sort(what.begin(), what.end());
              changed(what);
          }) {
        set.start();
    }

    // A completion already queued when the watcher is destroyed still runs (cancelling does not
    // recall it): handlers hold the Impl weakly and do nothing once it is gone.
    void wait() {
        os.fd.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [weak = weak_from_this()](const boost::system::error_code& ec) {
                             auto self = weak.lock();
                             if (ec || !self) return;
                             std::vector<std::string> saved; // what this wake-up's events changed, each once
                             self->os.drain([&](const watch::Event& event) {
                                 std::string what = self->set.handle(event);
                                 if (!what.empty() && std::find(saved.begin(), saved.end(), what) == saved.end() &&
                                     saved.size() < kMaxShown)
                                     saved.push_back(std::move(what));
                             });
                             self->set.endBatch();
                             if (!saved.empty()) self->restartQuietPeriod(saved);
                             self->wait();
                         });
    }

    void restartQuietPeriod(const std::vector<std::string>& saved) {
        for (const auto& what : saved) {
            spdlog::debug("{} saved: deploying after {} ms of quiet", what, quiet.quiet().count());
            if (changes->size() < kMaxChangesKept && std::find(changes->begin(), changes->end(), what) == changes->end())
                changes->push_back(what);
        }
        quiet.restart();
    }
};

ModelWatcher::ModelWatcher(boost::asio::io_context& io, Model model, std::chrono::milliseconds debounce, Changed changed)
    : impl_(std::make_shared<Impl>(io, std::move(model), debounce, std::move(changed))) {
    impl_->wait();
}

ModelWatcher::~ModelWatcher() = default;

bool ModelWatcher::settling() const { return impl_->quiet.settling(); }

} // namespace nixproc
