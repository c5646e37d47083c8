#pragma once
// Watches the model for edits, in three parts kept apart (as watchman keeps its watcher apart
// from its settling):
//   - the OS adapter (inotify, in the .cpp) adds and removes watches on folders and reads their
//     events, translated into watch::Event;
//   - watch::WatchSet decides which folders and files are watched and which events change the
//     model: the model's folder, the folder's parent (the folder itself may be removed and created
//     again, or be a Kubernetes ConfigMap whose `..data` link is swapped; the mode and owner of
//     both count, as the trust check covers them), every sub-folder that Model::read descends into
//     (isModelFolder: not hidden, not deeper than kMaxModelDepth), at most kMaxModelFiles folders
//     (folders created or moved in later are added, folders removed or moved away are dropped; a
//     folder whose mode or owner changes is tried and listed again: it could not be read before),
//     and the model file and the extra files themselves: the events of a file bind-mounted over
//     its folder's entry reach only a watch on the file (its folder is the host's). Editors replace
//     files, so a file's watch follows what its name is after each event. A model file that is a
//     mount point is named at start, and one replaced on the host behind its mount in one warning;
//   - watch::QuietPeriod settles: when the saves have been quiet for debounce_ms, `changed` runs
//     once.
// Editor temp and lock files never match. A queue overflow (events were lost) counts as a change
// and the watch set is crawled anew: the fingerprint decides. A folder that cannot be watched is
// named once; folders left out at inotify's watch limit are counted, one line per crawl or batch
// of events.
#include "deploy/Model.hpp"

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace nixproc {

namespace watch {

// One thing the OS reported about a watched folder, in the watch set's terms.
struct Event {
    enum class Kind {
        Entry,        // a file in the folder was written, created, removed, renamed or chmod'ed (name)
        FolderIn,     // a sub-folder was created or moved in (name)
        FolderOut,    // a sub-folder was removed or moved away (name)
        FolderAttrib, // a sub-folder's mode, owner or times changed (name): it may be readable now
        Self,         // the watched folder's or file's own mode, owner or link count changed, or the file was written
        Gone,         // the watched folder itself was removed or moved
        Dropped,      // the watch is no more (the kernel dropped it, or it was removed)
        Overflow,     // events were lost (no folder)
    };
    Kind kind = Kind::Entry;
    int id = -1; // the watch it came on
    std::string name;
};

// The OS side of the watch set.
class Folders {
public:
    enum class Role {
        Parent, // the folder holding the model's folder: entries coming and going only
        Model,  // the model's folder: may be a symlink (followed)
        Sub,    // a sub-folder: a symlink is never followed (not a folder, then)
        File,   // a model file itself (followed): written in place, chmod'ed, unlinked
    };
    // What a path leads to (followed), as stat(2) and statx(2) say.
    struct Identity {
        dev_t dev = 0;
        ino_t ino = 0;
        nlink_t links = 0;       // 0: removed, and still reachable here only through a mount
        bool mount_root = false; // a mount point: what is there is mounted over the folder's entry
    };
    virtual ~Folders() = default;
    // A watch id (the same for a folder or file already watched), or -errno.
    virtual int add(const std::string& path, Role role) = 0;
    virtual void remove(int id) = 0;
    // nullopt when it cannot be stat'ed (not there).
    virtual std::optional<Identity> identify(const std::string& path) = 0;
};

// "ids.nix changed" rather than "processes.nix changed": the names of what changed (WatchSet::handle's
// answers), sorted, the first kShownChanges of them and how many more.
inline constexpr std::size_t kShownChanges = 3;
std::string describeChanges(const std::vector<std::string>& changed);

// Which folders are watched, and what an event means for the model. Never blocks: the crawl reads
// folders only, at most kMaxModelFiles of them, kMaxModelDepth deep.
class WatchSet {
public:
    using Warn = std::function<void(const std::string&)>;

    WatchSet(Folders& folders, Model model, Warn warn);
    WatchSet(const WatchSet&) = delete;
    WatchSet& operator=(const WatchSet&) = delete;

    // Watches the parent and crawls the model's folder.
    void start();

    // What of the model the event changed: a file ("services/web.nix"), a sub-folder
    // ("services/db/") or the model's folder (its full path); "" if nothing of the model did.
    std::string handle(const Event& event);
    // After the events read at once: says how many folders could not be watched for lack of
    // inotify watches since the last call, in one line (a storm of folders is not a storm of lines).
    void endBatch();

    // The watched folders relative to the model's folder ("" is the folder itself), sorted.
    std::vector<std::string> watched() const;
    // The model files watched themselves (names in the model's folder), sorted.
    std::vector<std::string> watchedFiles() const;
    int parentId() const { return parent_id_; }
    // The watch on the model file `name`, -1 when it is not watched.
    int fileIdOf(const std::string& name) const;
    // The watch on `relative`, -1 when it is not watched.
    int idOf(const std::string& relative) const;

private:
    using Ids = std::map<std::string, int>;   // relative path → watch
    using Paths = std::map<int, std::string>; // watch → relative path
    struct Crawled {
        bool found = false;     // a model file is in a folder listed
        bool found_new = false; // ...in a folder that was not watched before
    };
    struct WatchedFile {
        std::string name; // in the model's folder
        dev_t dev = 0;    // the file watched: a mount keeps it at its path once it is removed
        ino_t ino = 0;
    };
    void rescan();
    // Watches the model file and the extra files that are there, each itself: events of a file
    // bind-mounted over the folder's entry go to its host folder's watch, never to this folder's.
    void watchFiles();
    // Watches what `name` is now (another file after a save that replaced it), or forgets it.
    void watchFile(const std::string& name);
    std::string fileEvent(int id, Event::Kind kind);
    // Watches `relative` and what is below it, breadth first (the folders watched already are
    // listed again, and keep their watches).
    Crawled crawl(const std::string& relative, Ids& ids, Paths& paths);
    // Forgets `relative` and everything below it, removing their watches but `keep`'s; whether
    // anything was watched there.
    bool drop(const std::string& relative, Ids& ids, Paths& paths, int keep = -1);
    std::string absolute(const std::string& relative) const;
    void warnOnce(const std::string& folder, const std::string& message);
    void warnTooDeep(const std::string& path);
    // `path` could not be watched: inotify's watch limit (ENOSPC).
    void noRoom(const std::string& path);

    Folders& folders_;
    Model model_;
    Warn warn_;
    std::string folder_name_; // the model's folder as its parent lists it
    int parent_id_ = -1;
    Ids ids_;
    Paths paths_;
    std::map<int, WatchedFile> files_; // watch → the model file
    dev_t folder_dev_ = 0;             // the model's folder as watched: a mount keeps it at its path
    ino_t folder_ino_ = 0;
    std::set<std::string> warned_; // folders already warned about (each once), at most kMaxModelFiles
    bool full_warned_ = false;     // kMaxModelFiles folders are watched, and that was said
    std::size_t no_room_ = 0;      // folders left out at the watch limit since the last endBatch
    std::string first_no_room_;    // the first of them
};

// The settling: after restart(), `changed` runs once the restarts have been quiet for `quiet`.
// Destroyed, it never calls `changed`, even for a quiet period that ended before.
class QuietPeriod {
public:
    QuietPeriod(boost::asio::io_context& io, std::chrono::milliseconds quiet, std::function<void()> changed);
    QuietPeriod(const QuietPeriod&) = delete;
    QuietPeriod& operator=(const QuietPeriod&) = delete;

    void restart();
    bool settling() const { return state_->settling; }
    std::chrono::milliseconds quiet() const { return quiet_; }

private:
    struct State {
        std::function<void()> changed;
        bool settling = false;   // the timer runs
        unsigned generation = 0; // a completion of an earlier period (already queued) does nothing
    };
    std::shared_ptr<State> state_; // completions hold it weakly
    std::chrono::milliseconds quiet_;
    boost::asio::steady_timer timer_;
};

} // namespace watch

class ModelWatcher {
public:
    // What changed in the quiet period that ended (WatchSet::handle's answers, sorted, at most
    // kMaxChangesKept of them).
    using Changed = std::function<void(const std::vector<std::string>& changed)>;
    static constexpr std::size_t kMaxChangesKept = 64;

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
