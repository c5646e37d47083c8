#pragma once
// The backends, one file each; ProcessManager.cpp picks one from the configuration.
#include "manager/ProcessManager.hpp"

namespace nixproc {

std::unique_ptr<ProcessManager> makeSupervisord(const Config& config);
std::unique_ptr<ProcessManager> makeS6Rc(const Config& config);
std::unique_ptr<ProcessManager> makeSysVinit(const Config& config);
std::unique_ptr<ProcessManager> makeDisnix(const Config& config);
std::unique_ptr<ProcessManager> makeCommandOnly(const Config& config);

} // namespace nixproc
