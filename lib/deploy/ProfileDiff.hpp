#pragma once
// What a deployment changed, per process instance: the profile's generation before and after,
// read in the manager's layout (supervisord conf.d/*.conf, rc.d/rcN.d/S*, s6-rc etc/s6/sv/*...).
#include "manager/ProcessManager.hpp"

#include <map>
#include <string>
#include <vector>

namespace nixproc {

// The entries of `profile`/layout.folder, named per the layout (ProcessManager::inventory's default).
ProfileSnapshot readProfile(const std::string& profile, const ProfileLayout& layout);

// What an entry of a profile is: where a link resolves to (a store path, which changes with its
// content), or "content:..." for a plain file, "dangling:PATH" for a broken link.
std::string entryIdentity(const std::string& entry);

struct ProfileDiff {
    std::vector<std::string> added, removed, changed, unchanged;

    bool empty() const { return added.empty() && removed.empty() && changed.empty(); }
    // "+webapp2 -old ~nginx =webapp", or "no process instances" for two empty generations.
    std::string describe() const;
};

ProfileDiff diffProfiles(const ProfileSnapshot& before, const ProfileSnapshot& after);

} // namespace nixproc
