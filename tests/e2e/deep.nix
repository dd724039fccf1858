# A chain of `depth` derivations, each an input of the next: the top one's hashDerivationModulo
# walks all of them (the agent builds only the top one; the loader sends every .drv below it,
# and the NAR of the one output the top one uses).
{ busyboxDir, depth }:
let
  l = import ./lib.nix { inherit busyboxDir; };
  link = i: l.mk ({ name = "link-${toString i}"; script = "echo ${toString i} > $out"; }
    // (if i == 0 then { } else { prev = link (i - 1); }));
in
l.mk { name = "chain-top-${toString depth}"; prev = link (depth - 2); script = "echo $prev > $out"; }
