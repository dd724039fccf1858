# Shared helpers for the end-to-end corpus. Every builder is Debian's static busybox, put in the
# store with builtins.path so the corpus needs nothing but `nix-bin` and `busybox-static`.
# `busyboxDir` is a directory holding `bin/busybox` (made by the test harness).
{ busyboxDir }:
rec {
  busybox = builtins.path { path = /. + busyboxDir; name = "busybox"; };
  sh = "${busybox}/bin/busybox";
  # A derivation whose builder is `busybox sh -c SCRIPT`.
  mk = attrs@{ name, script, ... }:
    derivation ((removeAttrs attrs [ "script" ]) // {
      inherit name;
      system = "x86_64-linux";
      builder = sh;
      args = [ "sh" "-c" script ];
      PATH = "${busybox}/bin";
    });
}
