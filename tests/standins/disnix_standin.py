# What the disnix-activate and disnix-deploy stand-ins share (tests only; Disnix and Dysnomia are not
# packaged for Debian 12): Disnix's manifest, its transition and Dysnomia's "process" module,
# read from svanderburg/disnix 8bbdcdf and svanderburg/dysnomia 2ad4fc4:
#   src/libmanifest/manifest.c            create_manifest, check_version, check_manifest,
#                                         determine_previous_manifest_file, open_previous_manifest
#   src/libmanifest/servicemapping*.c     mappings sorted by (target, container, service key);
#                                         a missing <target> is the coordinator's host name
#   src/libmanifest/servicemapping-traverse.c   activation: dependencies first; deactivation:
#                                         dependants first; a target missing from the NEW manifest
#                                         fails an activation and silently skips a deactivation
#   src/libdeploy/transition.c            deactivate obsolete mappings, then activate new ones,
#                                         rolling back on failure; its four exit statuses
#   src/libdeploy/activate.c              activate_system, print_transition_status
#   dysnomia-modules/process.in           the process and pidFile of PKG/etc/dysnomia/process/*,
#                                         else the one executable in PKG/bin; deactivation kills
#                                         the pid in the pid file
#   dysnomia-modules/legacy/process.in    started with nohup in the background, its pid written
#                                         to the pid file by the module itself
# Messages, their stream (g_print: stdout, g_printerr: stderr) and exit statuses are upstream's.
# Deviations, for the tests: the mappings of a target run one after another (upstream forks up to
# numOfCores at once; build-disnix-env.nix's localhost has 1); the process's output goes to
# /dev/null (the legacy module wrote /var/log/NAME.log); after its SIGTERM a deactivation waits
# (at most 5 s) until the process is gone, so that what a test sees after it is its doing.
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

LOCALSTATEDIR = "/nix/var"

FLAG_NO_UPGRADE = 1
FLAG_NO_ROLLBACK = 2
FLAG_DRY_RUN = 4

TRANSITION_SUCCESS = 0
TRANSITION_FAILED = 1
TRANSITION_OBSOLETE_MAPPINGS_ROLLBACK_FAILED = 2
TRANSITION_NEW_MAPPINGS_ROLLBACK_FAILED = 3

DEACTIVATED, ACTIVATED, IN_PROGRESS, ERROR = "deactivated", "activated", "in progress", "error"
SERVICE_DONE, SERVICE_IN_PROGRESS, SERVICE_ERROR = "done", "in progress", "error"


def out(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def standin_log(line):
    path = os.environ.get("NIXPROC_STANDIN_LOG", "")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class Mapping:
    def __init__(self, service, container, target, provided_by=None):
        self.service, self.container, self.target = service, container, target
        self.container_provided_by_service = provided_by
        self.status = DEACTIVATED

    def key(self):  # compare_interdependency_mappings: target, container, service
        return (self.target or "", self.container or "", self.service or "")


class Service:
    def __init__(self, name, pkg, type_, depends_on):
        self.name, self.pkg, self.type, self.depends_on = name, pkg, type_, depends_on


class Manifest:
    def __init__(self):
        self.services = {}
        self.mappings = []
        self.targets = {}
        self.correct_version = True


def _text(element, name):
    child = element.find(name)
    return None if child is None else (child.text or "")


def _mapping(element):
    m = Mapping(_text(element, "service"), _text(element, "container"), _text(element, "target"),
                _text(element, "containerProvidedByService"))
    if m.target is None:
        m.target = socket.gethostname()  # parse_service_mapping's default
    return m


def create_manifest(path):
    """manifest.c:109 create_manifest: None when it does not parse."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, TypeError):
        err("Error with parsing the manifest XML file!\n")
        return None
    manifest = Manifest()
    if root.get("version") != "2":  # check_version
        manifest.correct_version = False
        err("Disnix requires a manifest that uses the version 2 structure!\n")
        err("You can convert an old V1 version manifest file by running disnix-convert!\n")
        return manifest
    for child in root:
        if child.tag == "services":
            for s in child.findall("service"):
                depends = s.find("dependsOn")
                manifest.services[s.get("name")] = Service(
                    _text(s, "name"), _text(s, "pkg"), _text(s, "type"),
                    [] if depends is None else [_mapping(d) for d in depends.findall("mapping")])
        elif child.tag == "serviceMappings":
            manifest.mappings = sorted((_mapping(m) for m in child.findall("mapping")), key=Mapping.key)
        elif child.tag == "infrastructure":
            for t in child.findall("target"):
                props = {p.get("name"): (p.text or "") for p in t.findall("properties/property")}
                manifest.targets[t.get("name")] = {
                    "properties": props,
                    "targetProperty": _text(t, "targetProperty") or "hostname",
                    "numOfCores": _text(t, "numOfCores") or "1",
                }
    return manifest


def check_manifest(manifest):
    """manifest.c:199, for what the stand-ins read."""
    status = manifest.correct_version
    for s in manifest.services.values():
        for field, value in (("name", s.name), ("pkg", s.pkg), ("type", s.type)):
            if value is None:
                err("service.%s is not set!\n" % field)
                status = False
    for m in manifest.mappings:
        for field, value in (("service", m.service), ("container", m.container), ("target", m.target)):
            if value is None:
                err("mapping.%s is not set!\n" % field)
                status = False
                break
    if status:
        for i, m in enumerate(manifest.mappings):
            if m.service not in manifest.services:
                err("Service mapping: %d contains an incorrect reference to service: %s\n" % (i, m.service))
                status = False
            if m.target not in manifest.targets:
                err("Service mapping: %d contains an incorrect reference to target: %s\n" % (i, m.target))
                status = False
    return status


def check_profile_option(profile):
    return profile if profile is not None else os.environ.get("DISNIX_PROFILE", "default")


def determine_previous_manifest_file(coordinator_profile_path, profile):
    """manifest.c:286: the coordinator profile, when it can be opened."""
    if coordinator_profile_path is None:
        user = pwd.getpwuid(os.geteuid()).pw_name
        path = LOCALSTATEDIR + "/nix/profiles/per-user/" + user + "/disnix-coordinator/" + profile
    else:
        path = coordinator_profile_path + "/" + profile
    try:
        open(path, "r").close()
    except OSError:
        return None
    return path


def determine_manifest_to_open(old_manifest, coordinator_profile_path, profile):
    return determine_previous_manifest_file(coordinator_profile_path, profile) if old_manifest is None else old_manifest


def open_previous_manifest(path):
    if path is None:
        return None
    err("[coordinator]: Using previous manifest: %s\n" % path)
    return create_manifest(path)


# Dysnomia's process module, as disnix-run-activity runs it for a "process" service.

def _process_parameters(pkg):
    config = {}
    folder = os.path.join(pkg, "etc/dysnomia/process")
    if os.path.isdir(folder):
        files = sorted(os.listdir(folder))
        if files:  # `source $componentPath/etc/dysnomia/process/*` reads the first one
            with open(os.path.join(folder, files[0])) as f:
                for line in f:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        config[key] = value
    process = config.get("process", "")
    if not process:
        bins = sorted(os.listdir(os.path.join(pkg, "bin"))) if os.path.isdir(os.path.join(pkg, "bin")) else []
        if len(bins) != 1:
            err("No process could be found. Make sure there is an executable in bin/ or a process config\n" if not bins else
                "More than one process found. Specify which executable to start in a process config file\n")
            return None, None
        process = os.path.join(pkg, "bin", bins[0])
    pid_file = config.get("pidFile", "") or os.path.join(os.environ.get("runtimeDir", "/var/run"),
                                                        os.path.basename(process) + ".pid")
    return process, pid_file


def dysnomia(operation, service_type, pkg):
    if service_type != "process":
        err("dysnomia (stand-in): module %s is not imitated\n" % service_type)
        return False
    process, pid_file = _process_parameters(pkg)
    if process is None:
        return False
    if operation == "activate":
        if os.path.exists(pid_file):
            err("PID file: %s already exists, assuming that the process has been started\n"
                "already! If not, you should remove it, and try starting the process again\n" % pid_file)
            return True
        try:
            # nohup $process & (split into words, as the module's unquoted $process; no setsid:
            # the process stays in the activation's process group).
            child = subprocess.Popen(["nohup"] + process.split(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            with open(pid_file, "w") as f:
                f.write("%d\n" % child.pid)
        except OSError as e:
            err("%s: %s\n" % (process, e))
            return False
        return True
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        err("%s does not exists! Assuming that the process was stopped already!\n" % pid_file)
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.unlink(pid_file)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    return True


# The transition (transition.c, servicemapping-traverse.c), one mapping at a time.

def _find(array, key):
    for m in array:
        if m.key() == key:
            return m
    return None


def _print_step(activity, mapping, service):
    out("[target: %s]: %s service with key: %s and package: %s with module: %s in container: %s, arguments: \n"
        % (mapping.target, activity, mapping.service, service.pkg, service.type, mapping.container))


def _activate(mapping, services, dry_run):
    service = services[mapping.service]
    _print_step("Dry-run activating" if dry_run else "Activating", mapping, service)
    ok = True if dry_run else dysnomia("activate", service.type, service.pkg)
    if ok:
        mapping.status = ACTIVATED
    else:
        mapping.status = ERROR
        err("[target: %s]: Activation failed of service: %s\n" % (mapping.target, mapping.service))


def _deactivate(mapping, services, dry_run):
    service = services[mapping.service]
    _print_step("Dry-run deactivating" if dry_run else "Deactivating", mapping, service)
    ok = True if dry_run else dysnomia("deactivate", service.type, service.pkg)
    if ok:
        mapping.status = DEACTIVATED
    else:
        mapping.status = ERROR
        err("[target: %s]: Deactivation failed of service: %s\n" % (mapping.target, mapping.service))


def _traverse_dependencies(unified, services, key, targets, map_fn):
    """traverse_inter_dependency_mappings: what it depends on first."""
    mapping = _find(unified, key)
    service = services[mapping.service]
    for dependency in service.depends_on:
        status = _traverse_dependencies(unified, services, dependency.key(), targets, map_fn)
        if status != SERVICE_DONE:
            return status
    if mapping.status == DEACTIVATED:
        if mapping.target not in targets:
            # Upstream prints the service key and the target the other way round.
            out("[target: %s]: Cannot map service with key: %s deploying service: %s since the machine is not present!\n"
                % (mapping.service, mapping.target, service.pkg))
            return SERVICE_ERROR
        map_fn(mapping, services)
        return SERVICE_IN_PROGRESS
    if mapping.status == ACTIVATED:
        return SERVICE_DONE
    if mapping.status == IN_PROGRESS:
        return SERVICE_IN_PROGRESS
    return SERVICE_ERROR


def _traverse_dependants(unified, services, key, targets, map_fn):
    """traverse_interdependent_mappings: what depends on it first."""
    mapping = _find(unified, key)
    for other in unified:
        if any(d.key() == mapping.key() for d in services[other.service].depends_on):
            status = _traverse_dependants(unified, services, other.key(), targets, map_fn)
            if status != SERVICE_DONE:
                return status
    if mapping.status == ACTIVATED:
        if mapping.target not in targets:
            out("[target: %s]: Skip service with key: %s deploying service: %s since machine is no longer present!\n"
                % (mapping.target, mapping.service, services[mapping.service].pkg))
            mapping.status = DEACTIVATED
            return SERVICE_DONE
        map_fn(mapping, services)
        return SERVICE_IN_PROGRESS
    if mapping.status == DEACTIVATED:
        return SERVICE_DONE
    if mapping.status == IN_PROGRESS:
        return SERVICE_IN_PROGRESS
    return SERVICE_ERROR


def _traverse(array, unified, services, targets, strategy, map_fn):
    """traverse_service_mappings: until every mapping of `array` is done or failed."""
    success = True
    while True:
        done = 0
        for mapping in array:
            status = strategy(unified, services, mapping.key(), targets, map_fn)
            if status == SERVICE_ERROR:
                success = False
                done += 1
            elif status == SERVICE_DONE:
                done += 1
        if done >= len(array):
            return success


def _mark_errors(unified, status):
    for m in unified:
        if m.status == ERROR:
            m.status = status


def transition(manifest, previous, flags):
    dry_run = bool(flags & FLAG_DRY_RUN)
    activate = lambda m, s: _activate(m, s, dry_run)
    deactivate = lambda m, s: _deactivate(m, s, dry_run)
    targets = manifest.targets  # the NEW manifest's infrastructure, for both phases
    if previous is None:
        unified, services = manifest.mappings, manifest.services
        deactivation, activation, old_mappings = None, manifest.mappings, None
    else:
        old_keys = {m.key() for m in previous.mappings}
        new_keys = {m.key() for m in manifest.mappings}
        both = old_keys & new_keys
        deactivation = [m for m in previous.mappings if m.key() not in both]
        activation = [m for m in manifest.mappings if m.key() not in both]
        # unify_service_mapping_array: the old mappings as activated, the new ones as deactivated
        for m in previous.mappings:
            m.status = ACTIVATED
        unified = list(previous.mappings)
        for m in manifest.mappings:
            m.status = DEACTIVATED
            if m.key() not in both:
                unified.append(m)
        unified.sort(key=Mapping.key)
        services = dict(previous.services)
        services.update(manifest.services)  # generate_union_services_table: the new one wins
        old_mappings = previous.mappings

    out("[coordinator]: Executing deactivation of services:\n")
    if deactivation is not None and not _traverse(deactivation, unified, services, targets, _traverse_dependants, deactivate):
        if flags & FLAG_NO_ROLLBACK:
            err("[coordinator]: Deactivation failed, but not performing a rollback because it has\n"
                "been disabled! Please manually diagnose the problems!\n")
            return TRANSITION_FAILED
        err("[coordinator]: Deactivation failed! Doing a rollback...\n")
        _mark_errors(unified, ACTIVATED)
        if _traverse(old_mappings, unified, services, targets, _traverse_dependencies, activate):
            return TRANSITION_FAILED
        err("[coordinator]: Obsolete mappings rollback failed!\n\n")
        return TRANSITION_OBSOLETE_MAPPINGS_ROLLBACK_FAILED

    out("[coordinator]: Executing activation of services:\n")
    if _traverse(activation, unified, services, targets, _traverse_dependencies, activate):
        return TRANSITION_SUCCESS
    if flags & FLAG_NO_ROLLBACK:
        err("[coordinator]: Activation failed, but not doing a rollback as it has been\n"
            "disabled! Please manually diagnose the errors!\n")
        return TRANSITION_FAILED
    err("[coordinator]: Activation failed! Doing a rollback...\n")
    _mark_errors(unified, DEACTIVATED)
    if not _traverse(activation, unified, services, targets, _traverse_dependants, deactivate):
        err("[coordinator]: New mappings rollback failed!\n\n")
        return TRANSITION_NEW_MAPPINGS_ROLLBACK_FAILED
    if old_mappings is None:
        return TRANSITION_FAILED
    _mark_errors(unified, ACTIVATED)
    if _traverse(old_mappings, unified, services, targets, _traverse_dependencies, activate):
        return TRANSITION_FAILED
    return TRANSITION_OBSOLETE_MAPPINGS_ROLLBACK_FAILED


def activate_system(manifest, previous, flags):
    """activate.c:68"""
    out("[coordinator]: Executing the transition to the new deployment state\n")
    if flags & FLAG_NO_UPGRADE:
        out("[coordinator]: Forced to do no upgrade! Ignoring the previous manifest file!\n")
        previous = None
    elif previous is not None:
        out("[coordinator]: Doing an upgrade from previous manifest file\n")
    else:
        out("[coordinator]: Doing an installation from scratch\n")
    return transition(manifest, previous, flags)


def print_transition_status(status, old_manifest_file, new_manifest_file, coordinator_profile_path, profile):
    """activate.c:23"""
    if status == TRANSITION_SUCCESS:
        err("[coordinator]: The new configuration has been successfully activated!\n")
        return
    err("[coordinator]: ERROR: Transition phase execution failed!\n")
    if old_manifest_file is None:
        return
    path_arg = "--coordinator-profile-path %s " % coordinator_profile_path if coordinator_profile_path else ""
    if status == TRANSITION_NEW_MAPPINGS_ROLLBACK_FAILED:
        err("\nThe new mappings rollback failed! This means the system is now inconsistent!\n"
            "Please manually diagnose the errors before doing another redeployment!\n\n"
            "When the problems have been solved, the rollback can be triggered again, by\nrunning:\n\n"
            "$ disnix-activate --no-rollback -p %s %s-o %s %s\n\n" % (profile, path_arg, new_manifest_file, old_manifest_file))
    elif status == TRANSITION_OBSOLETE_MAPPINGS_ROLLBACK_FAILED:
        err("\nThe obsolete mappings rollback failed! This means the system is now\n"
            "inconsistent! Please manually diagnose the errors before doing another\nredeployment!\n\n"
            "When the problems have been solved, the rollback can be triggered again, by\nrunning:\n\n"
            "$ disnix-activate --no-upgrade --no-rollback -p %s %s%s\n\n" % (profile, path_arg, old_manifest_file))
