# GNU hello 2.10 built with a Debian bookworm toolchain from the store: the plain derivation
# nixpkgs would write (unpack, ./configure --prefix=$out, make, make check, make install).
#
#   tests/toolchain/fetch.sh                     # the pinned .debs and hello's source (SHA-256)
#   loader build examples/gnu-hello.nix --out DIR
#
# The toolchain (tests/toolchain/toolchain.nix) is itself a derivation built from Debian's
# packages, so `loader build` builds it in the agent first and then hello (docs/toolchain.md).
{ cache ? toString ../target/toolchain, bin ? /usr/bin }:
let
  toolchain = import ../tests/toolchain/toolchain.nix { inherit cache bin; };
in
derivation {
  name = "hello-2.10";
  system = "x86_64-linux";
  builder = "${toolchain}/bin/bash";
  # Debian's hello_2.10.orig.tar.gz is GNU's hello-2.10.tar.gz (tests/toolchain/srcs.txt).
  src = builtins.path { path = /. + "${cache}/src/hello_2.10.orig.tar.gz"; name = "hello-2.10.tar.gz"; };
  PATH = "${toolchain}/bin:${toolchain}/usr/bin";
  # Nix's sandbox has no /bin/sh (sandbox-paths is empty): configure and make are told which
  # shell to use, and scripts' #! lines name it, as nixpkgs' stdenv does (CONFIG_SHELL,
  # `make SHELL=$SHELL`, patchShebangs; gettext's po/Makefile says SHELL = /bin/sh).
  CONFIG_SHELL = "${toolchain}/bin/bash";
  args = [ "-e" "-c" ''
    tar xzf "$src"
    cd hello-2.10
    for f in $(find . -type f -perm -u+x); do
      case $(head -c 2 "$f") in '#!') sed -i "1s|^#! */bin/sh|#!$CONFIG_SHELL|" "$f" ;; esac
    done
    ./configure --prefix="$out"
    make SHELL="$CONFIG_SHELL"
    make check SHELL="$CONFIG_SHELL"
    make install SHELL="$CONFIG_SHELL"
  '' ];
}
