# The demo's model after the edit of README's walk-through: a second web app, webapp2.local.
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

  webapp2 = rec {
    port = ids.webappPorts.webapp2 or 0;
    dnsName = "webapp2.local";
    pkg = constructors.webapp { inherit port; instanceSuffix = "2"; };
  };

  nginx = rec {
    port = ids.nginxPorts.nginx or 0;
    pkg = constructors.nginxReverseProxyHostBased {
      webapps = [ webapp webapp2 ];
      inherit port;
    };
  };
}
