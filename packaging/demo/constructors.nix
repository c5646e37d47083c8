# Constructors for the demo's process instances, buildable by Debian's nix-bin without nixpkgs:
# each builds, with builtins.derivation and a /bin/sh builder, the package of one instance: its
# supervisord program file under conf.d/, as upstream's (nginx's also points at the nginx.conf it builds).
# Impure on purpose, for a demo without nixpkgs: the web app's binary and the state folder come
# from NIXPROC_DEMO_WEBAPP and NIXPROC_DEMO_STATE (packaging/demo/setup.sh sets both).
let
  webappProgram = builtins.getEnv "NIXPROC_DEMO_WEBAPP";
  stateDir = let s = builtins.getEnv "NIXPROC_DEMO_STATE"; in if s == "" then "/var/lib/nixproc-demo" else s;

  # A text file in the store, written by /bin/sh (no nixpkgs, so no writeTextFile).
  textFile = name: text: builtins.derivation {
    inherit name text;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s\\n' \"$text\" > $out" ];
  };

  # A process instance's package as nix-processmgmt's create-supervisord-program.nix builds it:
  # conf.d/NAME.conf, a link to the program file.
  supervisordProgram = name: command: let
    conf = textFile "${name}.conf" ''
      [program:${name}]
      command=${command}
      autostart=true
      autorestart=true
      stopsignal=TERM
      stdout_logfile=${stateDir}/log/${name}.log
      redirect_stderr=true
    '';
  in builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/conf.d && /bin/ln -s ${conf} $out/conf.d/${name}.conf" ];
  };
in
{
  webapp = { port, instanceSuffix ? "" }:
    supervisordProgram "webapp${instanceSuffix}" "${webappProgram} --port ${toString port}";

  # nginx routing by Host header: dnsName → that web app's port.
  nginxReverseProxyHostBased = { webapps, port }:
    let
      conf = textFile "nginx.conf" ''
        daemon off;
        worker_processes 1;
        pid ${stateDir}/run/nginx.pid;
        error_log stderr;
        events { worker_connections 64; }
        http {
          access_log off;
          client_body_temp_path ${stateDir}/nginx/client_body;
          proxy_temp_path ${stateDir}/nginx/proxy;
          fastcgi_temp_path ${stateDir}/nginx/fastcgi;
          uwsgi_temp_path ${stateDir}/nginx/uwsgi;
          scgi_temp_path ${stateDir}/nginx/scgi;
          server { listen ${toString port} default_server; return 404; }
          ${builtins.concatStringsSep "\n" (map (w: ''
          server {
            listen ${toString port};
            server_name ${w.dnsName};
            location / { proxy_pass http://127.0.0.1:${toString w.port}; }
          }'') webapps)}
        }
      '';
    in
    supervisordProgram "nginx" "/usr/sbin/nginx -c ${conf}";
}
