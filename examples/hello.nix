# The example `make demo` builds attested. Its builder is Debian's static busybox, put in the
# store with builtins.path, so nothing but `nix-bin` and `busybox-static` is needed.
#   nix-instantiate examples/hello.nix --argstr busyboxDir DIR   (DIR/bin/busybox)
{ busyboxDir }:
let
  busybox = builtins.path { path = /. + busyboxDir; name = "busybox"; };
in
derivation {
  name = "hello-attested";
  system = "x86_64-linux";
  builder = "${busybox}/bin/busybox";
  PATH = "${busybox}/bin";
  greeting = "Hello from a build nobody has to trust";
  args = [ "sh" "-c" ''
    mkdir -p $out/share $out/bin
    echo "$greeting" > $out/share/greeting
    seq 1 100 | awk '{ s += $1 } END { print "1 + 2 + ... + 100 =", s }' > $out/share/sum
    printf '#!${busybox}/bin/busybox sh\ncat %s/share/greeting\n' $out > $out/bin/hello
    chmod +x $out/bin/hello
  '' ];
}
