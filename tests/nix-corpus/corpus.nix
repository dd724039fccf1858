# Derivations for the Nix-core conformance tests: only instantiated (never built), so builders
# need not exist. Every expected value is computed by Nix at test time.
let
  drv = attrs: derivation ({ system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "true" ]; } // attrs);
  h = algo: s: builtins.hashString algo s;
  src = builtins.toFile "input-source.txt" "an input source\n";
  src2 = builtins.toFile "second.sh" "echo second\n";
  a = drv { name = "a"; };
  multi = drv { name = "multi"; outputs = [ "out" "dev" "lib" "doc" ]; };
  c1 = drv { name = "chain1"; };
  c2 = drv { name = "chain2"; dep = c1; };
  c3 = drv { name = "chain3"; dep = c2; };
  fixed = method: algo: drv {
    name = "fixed-${method}-${algo}";
    outputHashMode = method;
    outputHashAlgo = algo;
    outputHash = h algo "content of ${method} ${algo}";
  };
in {
  single = a;
  multiple-outputs = multi;
  subset-of-outputs = drv { name = "subset"; d = multi.dev; l = multi.lib; };
  one-output-of-many = drv { name = "one-of-many"; d = multi.doc; };
  all-outputs = drv { name = "all-outputs"; inherit (multi) out dev lib doc; };
  chain-1 = c1;
  chain-2 = c2;
  chain-3 = c3;
  chain-4 = drv { name = "chain4"; dep = c3; also = c1; };
  input-source = drv { name = "with-source"; inherit src; };
  two-sources = drv { name = "two-sources"; inherit src src2; };
  source-and-drv = drv { name = "source-and-drv"; inherit src; dep = a; };
  fixed-flat-sha1 = fixed "flat" "sha1";
  fixed-flat-sha256 = fixed "flat" "sha256";
  fixed-flat-sha512 = fixed "flat" "sha512";
  fixed-recursive-sha1 = fixed "recursive" "sha1";
  fixed-recursive-sha256 = fixed "recursive" "sha256";
  fixed-recursive-sha512 = fixed "recursive" "sha512";
  uses-fixed = drv { name = "uses-fixed"; f1 = fixed "flat" "sha256"; f2 = fixed "recursive" "sha512"; };
  fixed-using-inputs = drv {
    name = "fixed-with-inputs"; dep = a; inherit src;
    outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = h "sha256" "x";
  };
  quotes = drv { name = "quotes"; v = "say \"hi\" 'there'"; };
  backslashes = drv { name = "backslashes"; v = "a\\b\\\\c\\"; };
  newlines = drv { name = "newlines"; v = "line1\nline2\n\nline4"; cr = "a\rb\r\n"; };
  tabs = drv { name = "tabs"; v = "a\tb\t\t"; };
  unicode = drv { name = "unicode"; v = "héllo wörld ✓ 日本語 🙂"; };
  empty-strings = drv { name = "empty-strings"; v = ""; args = [ "" "-c" "" ]; };
  odd-name = drv { name = "odd+name-1.2_3?x=y"; };
  dotted-name = drv { name = ".dotfile-like"; };
  long-name = drv { name = builtins.concatStringsSep "" (builtins.genList (_: "n") 200); };
  pass-as-file = drv { name = "pass-as-file"; big = "some contents"; passAsFile = [ "big" ]; };
  structured-attrs = drv {
    name = "structured"; __structuredAttrs = true;
    list = [ 1 "two" null true ]; nested = { x.y = "z"; }; dep = a;
  };
  placeholder = drv { name = "placeholder"; outputs = [ "out" "bin" ]; p = "${builtins.placeholder "bin"}/bin"; };
  many-args = drv { name = "many-args"; args = builtins.genList (i: "arg${toString i}") 100; };
  many-env = drv ({ name = "many-env"; } // builtins.listToAttrs (builtins.genList (i: { name = "VAR${toString i}"; value = toString i; }) 200));
  special-builder = drv { name = "special-builder"; builder = "/bin/path with \"quotes\"\tand tab"; };
}
