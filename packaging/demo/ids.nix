# Unique IDs of the process instances, as nix-processmgmt's ids.nix holds them.
{
  ids = {
    webappPorts = { webapp = 5000; webapp2 = 5001; };
    nginxPorts = { nginx = 8080; };
  };
}
