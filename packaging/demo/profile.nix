# What the switch stand-in builds: a profile with one supervisord program file per process
# instance of the model, as links into the store under conf.d/ (the layout nixproc-init's plan reads).
{ processesFile }:
let
  processes = import processesFile { processManager = "supervisord"; };
  names = builtins.attrNames processes;
in
builtins.derivation {
  name = "nixproc-supervisord-profile";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" (builtins.concatStringsSep "\n" ([ "/bin/mkdir -p $out/conf.d" ]
    ++ map (n: "/bin/ln -s ${processes.${n}.pkg} $out/conf.d/${n}.conf") names)) ];
}
