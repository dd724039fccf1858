# Derivations for the fault tests (tests/tests/faults.rs): long enough in every phase of a build
# for the test to stop QEMU inside it. `inputFile` is a 16 MiB file the test writes (its
# contents are fixed, so its store path is too).
{ busyboxDir, inputFile }:
let
  l = import ./lib.nix { inherit busyboxDir; };
  inherit (l) mk;
  input = builtins.path { path = /. + inputFile; name = "fault-input"; };
in {
  # Input: 16 MiB. Builder: a line of log, a few seconds of work under TCG. Output: 16 MiB.
  phases = mk { name = "fault-phases"; script = ''
    echo builder started
    i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done
    cat ${input} > $out
  ''; };
  small = mk { name = "fault-small"; script = "echo small > $out"; };
}
