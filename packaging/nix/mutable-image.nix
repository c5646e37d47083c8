# A mutable multi-process image whose PID 1 is nixproc-init: nix-processmgmt's
# createMutableMultiProcessImage (nixproc/create-image-from-steps/
# create-mutable-multi-process-image-universal.nix), with
# - Entrypoint [ ".../sbin/nixproc-init" ] and an empty Cmd: the init starts the process manager
#   itself (`nixproc-init CMD` would replace the manager's command, see config/init.yaml);
# - bootstrap = false: the init adds the channel and runs the first deployment, upstream's
#   /bin/bootstrap script would do both again;
# - /etc/nixproc/init.yaml: config/init.yaml for the image's processManager;
# - nixproc-init in contents.
#
# Usage:
#   let
#     pkgs = import <nixpkgs> {};
#     nix-processmgmt = builtins.fetchGit { url = https://github.com/svanderburg/nix-processmgmt.git; };
#     createImage = import ./packaging/nix/mutable-image.nix { inherit pkgs nix-processmgmt; };
#   in
#   createImage {
#     name = "multiprocess";
#     tag = "test";
#     contents = [ pkgs.mc ];
#     exprFile = ./processes.nix;
#     processManager = "supervisord"; # or s6-rc, sysvinit, disnix
#   }
# Every argument is passed on to createMutableMultiProcessImage; bootstrap is always false.
#
# Why buildImage is wrapped: upstream's steps fold over the input and set Cmd after it
# (backends/supervisord/image-steps/supervisord.nix sets the supervisord command line,
# steps/bootstrap-init.nix sets "/bin/bootstrap" unless bootstrap = false), so a Cmd or
# Entrypoint in the input's config does not survive. The last word is the config handed to
# pkgs.dockerTools.buildImage (create-image-from-steps.nix), so the pkgs given to upstream has a
# buildImage that sets Entrypoint and Cmd there. steps/init.nix picks the input attributes it
# passes on with builtins.functionArgs pkgs.dockerTools.buildImage, so the wrapper declares
# buildImage's arguments by name (a plain `args:` would make it drop name, contents, config...).
{ pkgs
, nix-processmgmt
, nixproc-init ? pkgs.callPackage ./default.nix { }
}:

input:

let
  processManager = input.processManager;
  initBin = "${nixproc-init}/sbin/nixproc-init";

  # Replaces `from` in the shipped file, and says so when the file no longer has it.
  replaceOnce = from: to: text:
    if builtins.replaceStrings [ from ] [ "" ] text == text
    then throw "mutable-image.nix: config/init.yaml no longer contains '${from}'"
    else builtins.replaceStrings [ from ] [ to ] text;

  # The folders upstream's image gives its tools (create-mutable-multi-process-image.nix:
  # stateDir "/var", runtimeDir "/var/run" unless the input sets them).
  stateDir = input.stateDir or "/var";
  runtimeDir = input.runtimeDir or "/var/run";
  forceDisableUserChange = input.forceDisableUserChange or false;

  # The shipped configuration for this image: its manager, that manager's switch by default
  # (nixproc-<pm>-switch), its default profile (disnix's coordinator profile rather than
  # processes), and the folders the switch is told.
  edits = [
    [ "process_manager: supervisord\n" "process_manager: ${processManager}\n" ]
    [ "  command: [nixproc-supervisord-switch]\n" "  # command: the default, nixproc-${processManager}-switch\n" ]
    [ "profile: /nix/var/nix/profiles/processes\n" "# profile: the default for ${processManager}\n" ]
    [ "  state_dir: /var\n" "  state_dir: ${stateDir}\n" ]
    [ "  runtime_dir: /var/run\n" "  runtime_dir: ${runtimeDir}\n" ]
    [ "  force_disable_user_change: false\n"
      "  force_disable_user_change: ${if forceDisableUserChange then "true" else "false"}\n" ]
  ];
  initYaml = builtins.foldl' (text: edit: replaceOnce (builtins.elemAt edit 0) (builtins.elemAt edit 1) text)
    (builtins.readFile ../../config/init.yaml) edits;

  initConfig = pkgs.writeTextDir "etc/nixproc/init.yaml" initYaml;

  realBuildImage = pkgs.dockerTools.buildImage;
  # lib.functionArgs: also for a buildImage wrapped by lib.makeOverridable (a functor set).
  realArgs = pkgs.lib.functionArgs realBuildImage;

  # nixpkgs' dockerTools.buildImage arguments (pkgs/build-support/docker/default.nix: name, tag,
  # fromImage*, contents, keepContentsDirlinks, config, extraCommands, uid, gid, runAsRoot,
  # diskSize, created; later versions add copyToRoot, architecture, buildVMMemorySize,
  # includeNixDB, meta, compressor); only those the real one takes are passed on.
  buildImage =
    { name, tag ? null, fromImage ? null, fromImageName ? null, fromImageTag ? null
    , copyToRoot ? null, contents ? null, keepContentsDirlinks ? false, config ? null
    , architecture ? null, runAsRoot ? null, extraCommands ? null, uid ? null, gid ? null
    , diskSize ? null, buildVMMemorySize ? null, created ? null, includeNixDB ? null
    , meta ? null, compressor ? null
    }@args:
    realBuildImage (builtins.intersectAttrs realArgs args // {
      config = (if args ? config && args.config != null then args.config else { }) // {
        Entrypoint = [ initBin ];
        Cmd = [ ];
      };
    });

  upstreamPkgs = pkgs // {
    dockerTools = pkgs.dockerTools // { inherit buildImage; };
  };

  # toString: a source folder (path) or a fetchGit/fetchFromGitHub result (its outPath).
  createMutableMultiProcessImage = import
    (toString nix-processmgmt + "/nixproc/create-image-from-steps/create-mutable-multi-process-image-universal.nix")
    { pkgs = upstreamPkgs; };
in
createMutableMultiProcessImage (input // {
  bootstrap = false;
  contents = (input.contents or [ ]) ++ [ nixproc-init initConfig ];
})
