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
  # A builder that never ends (the total time limit's test): alive, computing, silent.
  spin = mk { name = "fault-spin"; script = "echo spinning; while :; do :; done"; };
  small = mk { name = "fault-small"; script = "echo small > $out"; };
  # The agent's own limits (tests/tests/faults.rs: the_agents_limits_are_named).
  files-limit = mk { name = "files-limit"; script = "dd if=/dev/zero of=$out bs=1048576 count=4096"; };
  memory-limit = mk { name = "memory-limit"; script = "awk 'BEGIN { s = \"0123456789abcdef\"; while (1) s = s s }' && echo > $out"; };
  log-limit = mk { name = "log-limit"; script = "yes; echo > $out"; };
}
