# The end-to-end corpus: attribute name = case name. Each case is built natively by
# `nix-store --realise --option sandbox true` (the reference) and by `loader build` (attested).
# Cases under `fail` must fail in both.
{ busyboxDir }:
let
  l = import ./lib.nix { inherit busyboxDir; };
  inherit (l) mk busybox;
  dep = mk { name = "dep"; outputs = [ "out" "lib" ]; script = ''
    mkdir -p $out/share $lib/lib
    echo "dep out" > $out/share/file
    echo "dep lib" > $lib/lib/libdep.txt
  ''; };
  fixed = mk {
    name = "fixed-input";
    script = "printf 'fixed content\\n' > $out";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "sha256-rc95GuKAPAwQ8Nq5xDDDmsWAv5XWqDSiSPTe3XLGlmU=";
  };
  # Fixed outputs with the weak hashes Nix 2.8 still builds (hashes from md5sum, sha1sum and
  # nix-hash --type md5|sha1 over the same bytes).
  md5Flat = mk {
    name = "md5-flat";
    script = "printf 'md5 flat\\n' > $out";
    outputHashMode = "flat";
    outputHashAlgo = "md5";
    outputHash = "e138d7243ab77a77dc9505e0830367c8";
  };
  sha1Flat = mk {
    name = "sha1-flat";
    script = "printf 'sha1 flat\\n' > $out";
    outputHashMode = "flat";
    outputHashAlgo = "sha1";
    outputHash = "9a9cffd6f0bdfbe478c7b6e60e582ee0b039da9d";
  };
  md5Recursive = mk {
    name = "md5-recursive";
    script = "mkdir $out; printf 'md5 tree\\n' > $out/f";
    outputHashMode = "recursive";
    outputHashAlgo = "md5";
    outputHash = "fe82279e95a9540c4d197b2b72401918";
  };
  sha1Recursive = mk {
    name = "sha1-recursive";
    script = "printf '#!/bin/sh\\necho sha1\\n' > $out; chmod +x $out";
    outputHashMode = "recursive";
    outputHashAlgo = "sha1";
    outputHash = "92698299f5403af9c7098ac91f5c76edee3ff296";
  };
  # An input whose output refers to another path: consumers need both (the closure).
  references = mk { name = "references"; script = ''
    mkdir -p $out
    echo ${dep} > $out/ref-to-dep
    echo $out > $out/self-ref
  ''; };
in {
  ok = {
    single-file = mk { name = "single-file"; script = "echo hello > $out"; };

    tree = mk { name = "tree"; script = ''
      mkdir -p $out/bin $out/share/doc $out/empty
      printf '#!/bin/sh\necho hi\n' > $out/bin/hi
      chmod +x $out/bin/hi
      echo doc > $out/share/doc/README
      ln -s ../share/doc/README $out/bin/relative-link
      ln -s /nix/store/does-not-exist $out/dangling
      ln -s $out/share $out/absolute-link
      : > $out/empty-file
    ''; };

    multiple-outputs = mk { name = "multi"; outputs = [ "out" "dev" "doc" ]; script = ''
      echo out > $out
      mkdir -p $dev/include && echo '#define X 1' > $dev/include/x.h
      echo doc > $doc
    ''; };

    consumes-output = mk { name = "consumer"; script = ''
      cat ${dep.lib}/lib/libdep.txt > $out
      echo ${dep.lib} >> $out
    ''; };

    consumes-two-outputs = mk { name = "consumer-both"; script = ''
      mkdir $out
      cp ${dep}/share/file $out/a
      cp ${dep.lib}/lib/libdep.txt $out/b
    ''; };

    fixed-output-input = mk { name = "uses-fixed"; script = "cat ${fixed} ${fixed} > $out"; };

    odd-env = mk {
      name = "odd-env";
      quote = "say \"hi\"";
      backslash = "a\\b\\\\c";
      newline = "line1\nline2\n";
      tab = "a\tb";
      unicode = "héllo wörld ✓ 日本";
      empty = "";
      script = ''
        for v in quote backslash newline tab unicode empty; do
          eval "printf '%s=[%s]\n' $v \"\$$v\""
        done > $out
      '';
    };

    pass-as-file = mk {
      name = "pass-as-file";
      big = "contents passed as a file\nwith two lines";
      passAsFile = [ "big" ];
      script = ''cat "$bigPath" > $out; echo "$bigPath" >> $out'';
    };

    inherit references;

    # The input closure: `references` and, through it, `dep`'s out.
    consumes-closure = mk { name = "consumes-closure"; script = "cat ${references}/ref-to-dep > $out"; };

    md5-flat = md5Flat;
    sha1-flat = sha1Flat;
    md5-recursive = md5Recursive;
    sha1-recursive = sha1Recursive;
    consumes-weak-fixed = mk { name = "consumes-weak-fixed"; script = "cat ${md5Flat} ${sha1Flat} ${md5Recursive}/f ${sha1Recursive} > $out"; };

    allowed-references = mk {
      name = "allowed-refs";
      allowedReferences = [ dep ];
      script = "echo ${dep} > $out";
    };

    big-output = mk { name = "big-output"; script = ''
      dd if=/dev/zero bs=1048576 count=256 2>/dev/null | tr '\0' 'x' > $out
    ''; };

    pipes-and-tools = mk { name = "tools"; script = ''
      mkdir $out; cd $out
      seq 1 200 | sort -r | uniq | awk '{ s += $1 } END { print s }' > sum
      echo "The quick brown fox" | sed 's/quick/slow/' | tr a-z A-Z > fox
      mkdir d; for i in 1 2 3; do echo $i > d/f$i; done
      # Reproducible archives only: fixed mtimes and member order (a directory's order and
      # the build's clock differ between machines, so `tar cf - d` is not reproducible).
      touch -t 197001010000 d/f1 d/f2 d/f3
      tar cf - d/f1 d/f2 d/f3 | gzip -9 -n > d.tar.gz
      sha256sum d/* > sums
    ''; };

    # What the sandbox shows a builder in /etc (the agent's sandbox must show the same).
    sandbox-etc = mk { name = "sandbox-etc"; script = "cat /etc/passwd /etc/group /etc/hosts > $out"; };

    odd-name = mk { name = "odd-name_1.2+3-x?=y"; script = "echo odd > $out"; };

    # Nix's chroot store is writable for new entries: the write succeeds and is discarded;
    # nothing but the declared outputs may be published.
    writes-outside = mk { name = "writes-outside"; script = ''
      echo sneaky > /nix/store/sneaky-file
      echo scratch > /tmp/scratch
      echo ok > $out
    ''; };

    structured-attrs = derivation {
      name = "structured";
      system = "x86_64-linux";
      builder = l.sh;
      __structuredAttrs = true;
      list = [ "a" "b" ];
      nested = { x = 1; y = [ true null "z" ]; };
      flat = { k = "v'q"; n = 7; b = false; };
      big = 4294967297;
      "not-a-shell-name" = "skipped in .attrs.sh";
      # ash cannot source .attrs.sh (bash arrays); read the output path from .attrs.json instead.
      args = [ "sh" "-c" "out=$(sed -n 's/.*\"out\":\"\\([^\"]*\\)\".*/\\1/p' .attrs.json); mkdir $out; cp .attrs.json .attrs.sh $out/" ];
    };
  };

  fail = {
    # Nix 2.8 refuses a flat fixed output that is executable.
    executable-flat-output = mk {
      name = "executable-flat";
      script = "printf 'x\\n' > $out; chmod +x $out";
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac";
    };
    builder-fails = mk { name = "fails"; script = "echo failing >&2; exit 3"; };
    missing-output = mk { name = "missing"; outputs = [ "out" "dev" ]; script = "echo only-out > $out"; };
    disallowed-reference = mk {
      name = "disallowed-ref";
      disallowedReferences = [ dep ];
      script = "echo ${dep} > $out";
    };
  };
}
