# The example `make demo` builds attested:  loader build examples/hello.nix --out DIR
# Its builder is Debian's static busybox (apt: busybox-static), taken from /usr/bin into the
# store with builtins.path, so nothing but `nix-bin` and `busybox-static` is needed.
{ bin ? /usr/bin }:
let
  busybox = builtins.path {
    path = bin;
    name = "busybox";
    filter = path: type: baseNameOf path == "busybox";
  };
in
derivation {
  name = "hello-attested";
  system = "x86_64-linux";
  builder = "${busybox}/busybox";
  PATH = "${busybox}";
  greeting = "Hello from a build nobody has to trust";
  args = [ "sh" "-c" ''
    mkdir -p $out/share $out/bin
    echo "$greeting" > $out/share/greeting
    seq 1 100 | awk '{ s += $1 } END { print "1 + 2 + ... + 100 =", s }' > $out/share/sum
    printf '#!${busybox}/busybox sh\ncat %s/share/greeting\n' $out > $out/bin/hello
    chmod +x $out/bin/hello
  '' ];
}
