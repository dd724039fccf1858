# A Debian bookworm toolchain as one store path: gcc 12, binutils 2.40, glibc 2.36, make, bash,
# coreutils, sed, grep, gawk, diffutils, findutils, tar, gzip, xz (packages.txt). The .debs are
# the ones debs.txt pins by SHA-256, fetched by fetch.sh into CACHE/debs; they enter the store
# with builtins.path, so the same bytes always give the same store path. The builder is Debian's
# static busybox; toolchain-builder.sh says what it does to the tree.
#
#   nix-instantiate tests/toolchain/toolchain.nix --argstr cache "$PWD/target/toolchain"
{ cache ? toString ../../target/toolchain, bin ? /usr/bin }:
let
  busybox = builtins.path {
    path = bin;
    name = "busybox";
    filter = path: type: baseNameOf path == "busybox";
  };
  debs = builtins.path {
    path = /. + "${cache}/debs";
    name = "bookworm-debs";
    filter = path: type: builtins.match ".*\\.deb" (baseNameOf path) != null;
  };
in
derivation {
  name = "bookworm-toolchain";
  system = "x86_64-linux";
  builder = "${busybox}/busybox";
  args = [ "sh" "-e" ./toolchain-builder.sh ];
  inherit busybox debs;
}
