# The processes model of the demo: one web app behind an nginx reverse proxy that routes by Host
# header (webapp.local → webapp), in the shape of nix-processmgmt's webapps example.
{ ... }:

let
  ids = if builtins.pathExists ./ids.nix then (import ./ids.nix).ids else {};
  constructors = import ./constructors.nix;
in
rec {
  webapp = rec {
    port = ids.webappPorts.webapp or 0;
    dnsName = "webapp.local";
    pkg = constructors.webapp { inherit port; };
  };

  nginx = rec {
    port = ids.nginxPorts.nginx or 0;
    pkg = constructors.nginxReverseProxyHostBased {
      webapps = [ webapp ];
      inherit port;
    };
  };
}
