# The demo's stand-in for nix-processmgmt's nixproc/backends/supervisord/build-supervisord-env.nix
# (0e9ec77), which nixproc-supervisord-switch builds: the same arguments, and the same profile
# layout without nixpkgs' buildEnv: conf.d/NAME.conf at its root, one link per program file of each
# process instance's package (a package holds conf.d/NAME.conf, as create-supervisord-program.nix
# builds it). Upstream's profile also carries a copy of its supervisord.conf, which nothing reads
# from there; this one does not.
{ system ? builtins.currentSystem
, stateDir ? "/var"
, runtimeDir ? "${stateDir}/run"
, logDir ? "${stateDir}/log"
, cacheDir ? "${stateDir}/cache"
, spoolDir ? "${stateDir}/spool"
, lockDir ? "${stateDir}/lock"
, libDir ? "${stateDir}/lib"
, tmpDir ? (if stateDir == "/var" then "/tmp" else "${stateDir}/tmp")
, forceDisableUserChange ? false
, callingUser ? null
, callingGroup ? null
, extraParams ? {}
, exprFile ? null
}@args:

let
  processesFun = import exprFile;

  # The model gets the arguments it declares, as upstream passes them.
  processesArgs = builtins.intersectAttrs (builtins.functionArgs processesFun) (args // {
    processManager = "supervisord";
  } // extraParams);

  processes = if exprFile == null then {} else processesFun processesArgs;

  packages = map (name: processes.${name}.pkg) (builtins.attrNames processes);
in
builtins.derivation {
  name = "supervisord.d";
  inherit system;
  builder = "/bin/sh";
  args = [ "-c" ''
    /bin/mkdir -p $out/conf.d
    for package in ${builtins.concatStringsSep " " (map toString packages)}; do
      for conf in $package/conf.d/*.conf; do
        if [ -e "$conf" ]; then /bin/ln -s "$conf" $out/conf.d/; fi
      done
    done
  '' ];
}
