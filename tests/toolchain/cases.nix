# Small derivations with the bookworm toolchain, each a step of what GNU hello's build does,
# so a failure in the agent is found in the smallest build that shows it (tests/tests/toolchain.rs).
{ cache ? toString ../../target/toolchain, bin ? /usr/bin }:
let
  toolchain = import ./toolchain.nix { inherit cache bin; };
  mk = name: script: derivation {
    inherit name;
    system = "x86_64-linux";
    builder = "${toolchain}/bin/bash";
    args = [ "-e" "-c" script ];
    PATH = "${toolchain}/bin:${toolchain}/usr/bin";
  };
  # A program in three files: a header, a library file, main.
  sources = ''
    cat > sum.h <<'EOF'
    unsigned long sum_to(unsigned long n);
    EOF
    cat > sum.c <<'EOF'
    #include "sum.h"
    unsigned long sum_to(unsigned long n) { unsigned long s = 0; while (n) s += n--; return s; }
    EOF
    cat > main.c <<'EOF'
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include "sum.h"
    int main(int argc, char **argv) {
      unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 100;
      char *s = strdup("sum");
      printf("%s 1..%lu = %lu\n", s, n, sum_to(n));
      free(s);
      return 0;
    }
    EOF
  '';
in
{
  # The shell tools configure and make use, run by dynamically linked bash from the store.
  tools = mk "toolchain-tools" ''
    mkdir -p $out
    seq 1 200 | sed 's/0$/zero/' | grep -c zero > $out/grep
    printf 'b\na\nc\n' | sort | tr '\n' , > $out/sort
    echo 'x 3 y 4' | awk '{ print $2 * $4 }' > $out/awk
    printf 'a\nb\n' > one; printf 'a\nc\n' > two
    diff one two > $out/diff || test $? = 1
    mkdir -p d/e; echo hi > d/e/f
    find d -type f | sort > $out/find
    tar cf t.tar d; gzip -9n t.tar; xz -k t.tar.gz
    xz -dc t.tar.gz.xz | gzip -dc | tar tf - | sort > $out/tar
    cmp one one; cp -r d d2; mv d2 d3; ln -s d3 d4; ls d4/e > $out/ls
    make --version | head -1 > $out/make
  '';
  # cc1 alone: C to assembly.
  compile = mk "toolchain-compile" ''
    ${sources}
    mkdir -p $out
    gcc -O2 -S -o $out/sum.s sum.c
  '';
  # gcc -O2, three files compiled separately, an archive, and a link; the result runs.
  multi-file = mk "toolchain-multi-file" ''
    ${sources}
    mkdir -p $out/bin $out/lib
    gcc -O2 -Wall -c sum.c
    gcc -O2 -Wall -c main.c
    ar rcs $out/lib/libsum.a sum.o
    gcc -O2 -o $out/bin/sum main.o -L$out/lib -lsum
    $out/bin/sum 1000 > $out/result
  '';
  # gcc -pipe: cc1 | as through a pipe, compile and link in one driver run; and -static.
  pipe = mk "toolchain-pipe" ''
    ${sources}
    mkdir -p $out/bin
    gcc -pipe -O2 -o $out/bin/sum main.c sum.c
    gcc -pipe -O2 -static -o $out/bin/sum-static main.c sum.c
    $out/bin/sum 7 > $out/result
    $out/bin/sum-static 8 >> $out/result
  '';
  # make runs the compiler per target (the fork/exec pattern of a real build).
  make = mk "toolchain-make" ''
    ${sources}
    printf 'sum: main.o sum.o\n\t$(CC) -o $@ main.o sum.o\n%%.o: %%.c sum.h\n\t$(CC) -O2 -c $<\n' > Makefile
    make CC=gcc SHELL=${toolchain}/bin/bash
    mkdir -p $out/bin
    cp sum $out/bin/
    ./sum 50 > $out/result
  '';
}
