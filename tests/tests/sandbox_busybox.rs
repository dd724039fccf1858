//! Debian's static busybox in the sandbox against the same commands run natively: stdout and exit
//! status, byte for byte, case by case.
//!
//! Cases are batched per group, each in a fresh directory of its own; see
//! `integration_tests::sandbox` for the harness and what cases avoid.
use integration_tests::sandbox::compare;

#[test]
fn shell_pipes_subshells_loops_redirections() {
    compare(
        "shell",
        &[
            ("pipeline", "seq 1 30 | grep 1 | tr 1 X | sort -r | head -5"),
            ("pipeline status", "false | true; echo $?; true | false; echo $?; ! false; echo $?"),
            ("subshell scope", "x=1; (x=2; echo in $x; exit 3); echo out $x status $?"),
            ("nested loops", "for i in 1 2 3; do for j in a b; do printf '%s%s ' $i $j; done; done; echo"),
            ("while read", "seq 3 > n; while read l; do echo \"<$l>\"; done < n"),
            ("append and count", "seq 3 > n; cat n n >> m; cat n >> m; wc -l < m"),
            ("stderr to stdout", "ls missing 2>&1; echo $?"),
            ("stderr to file", "ls missing 2> err; echo $?; cat err; ls nope >/dev/null 2>&1; echo $?"),
            ("heredoc", "x=world; cat <<EOF\nhello $x $((6*7))\n  indented\nEOF\ncat <<'EOF'\nliteral $x\nEOF"),
            ("command substitution", "a=$(echo hi | tr a-z A-Z); b=`echo $a$a`; echo \"$a-$b\" ${#b}"),
            ("functions and return", "f() { echo f $1; return $(($1+1)); }; f 4; echo $?; g() { local v=in; echo $v; }; v=out; g; echo $v"),
            ("case and set", "set -- a bb ccc; echo $#; for w; do case $w in a) echo one;; b*) echo two;; *) echo many;; esac; done; shift 2; echo $1"),
            ("arithmetic", "i=0; while [ $i -lt 10 ]; do i=$((i+3)); done; echo $i $((i*i)) $((i%4)) $((1<<10))"),
            ("background and wait", "(echo bg; exit 4) & wait $!; echo waited $?"),
            ("exec redirection", "exec 3> f; echo via3 >&3; exec 3>&-; cat f; exec 4< f; read l <&4; echo got $l"),
            ("trap on exit", "(trap 'echo bye' EXIT; echo hi)"),
            ("exit status of sh -c", "sh -c 'exit 7'; echo $?; sh -c 'kill -9 $$'; echo $?"),
            ("big pipe", "seq 100000 | wc; seq 100000 | tail -1; yes abc | head -3"),
            ("long pipeline", "seq 2000 | sed -n 'p' | awk '{s+=$1} END {print s}' | tr 0-9 a-j | cat | cat"),
            ("xargs", "seq 7 | xargs echo; seq 6 | xargs -n 2 echo -"),
            ("test and expr", "[ 3 -gt 2 ] && echo yes; [ -z \"\" ] && echo empty; test abc = abd || echo differ; expr 7 % 3; expr length hello"),
            ("printf", "printf '%05d|%-4s|%x|%c|%s\\n' 42 ab 255 xyz 'a b'"),
            ("unset and defaults", "unset u; echo ${u:-def} ${u:=set} $u; v=abcdef; echo ${v#ab} ${v%ef} ${v:2:2}"),
            ("trap a signal", "sh -c 'trap \"echo got USR1\" USR1; kill -USR1 $$; echo after; trap \"echo term; exit 9\" TERM; kill $$; echo not here'; echo $?"),
            ("signal ends a shell", "sh -c 'kill -TERM $$; echo not here'; echo $?; sh -c 'trap \"\" TERM; kill $$; echo ignored'; echo $?"),
            ("background jobs", "for i in 1 2 3 4; do (seq $i > out$i) & done; wait; cat out1 out2 out3 out4 | wc -l; (exit 6) & wait $!; echo $?"),
            ("wait for each", "(exit 1) & a=$!; (exit 2) & b=$!; wait $b; echo b $?; wait $a; echo a $?"),
            ("set -e and pipefail", "sh -c 'set -e; true; false; echo no'; echo $?; sh -c 'set -o pipefail; false | true'; echo $?"),
            ("getopts and shift", "f() { while getopts ab: o; do echo opt $o ${OPTARG:-}; done; shift $((OPTIND-1)); echo rest $*; }; f -a -b val x y"),
            ("eval and nesting", "x='echo $((1+1))'; eval \"$x\"; echo $(echo $(echo deep)); v=$(seq 3 | tail -1); echo $v"),
            ("subshell exit codes", "(exit 0); echo $?; (exit 255); echo $?; sh -c 'exit 256'; echo $?; (false); echo $?"),
            ("script file", "printf 'echo script $1\\nexit 5\\n' > s.sh; sh s.sh arg; echo $?; chmod +x s.sh; echo '#!/bin/sh' > t; echo made"),
        ],
    );
}

#[test]
fn text_tools() {
    compare(
        "text",
        &[
            ("echo", "echo plain; echo -n no newline; echo; echo -e 'tab\\there\\nline'"),
            ("cat", "printf 'a\\nb\\n' > f; cat f f; cat -n f; cat < f"),
            ("tr", "echo Hello World | tr a-z A-Z; echo hello | tr -d l; echo aaabbb | tr -s ab; echo abc | tr abc xyz"),
            ("sort", "printf '3 c\\n1 a\\n2 b\\n10 j\\n1 a\\n' > f; sort f; sort -n f; sort -u f; sort -k2 -r f; sort -n -k1,1 f | head -2"),
            ("uniq", "printf 'a\\na\\nb\\nc\\nc\\nc\\n' > f; uniq f; uniq -c f; uniq -d f; uniq -u f"),
            ("sed", "seq 10 > f; sed -n '2,4p' f; sed 's/1/one/g' f | head -3; sed '/5/d' f | wc -l; sed -e '1i\\\nfirst' -e '$a\\\nlast' f | head -2"),
            ("sed -i", "printf 'x\\ny\\n' > f; sed -i 's/x/z/' f; cat f; ls"),
            ("awk", "printf 'a 1\\nb 2\\nc 3\\n' > f; awk '{print $2, $1}' f; awk '{s+=$2} END {print s, NR}' f; printf 'x:y:z\\n' | awk -F: 'BEGIN{OFS=\"-\"} {print $1,$3}'; awk 'BEGIN{printf \"%.3f\\n\", 22/7}'"),
            ("grep", "seq 30 > f; grep 2 f; grep -c 1 f; grep -v '[0-8]' f; grep -E '^(1|2)5$' f; grep -n 30 f; grep x f; echo $?"),
            ("grep -r", "mkdir -p d/e; echo needle > d/a; echo hay > d/b; echo needle2 > d/e/c; grep -r needle d | sort; grep -rl needle d | sort"),
            ("wc", "seq 1000 > f; wc f; wc -l < f; wc -c f; wc -w f; printf 'a b\\nc' | wc"),
            ("seq", "seq 5; seq 2 3 20; seq -s , 5; seq 10 -3 1; seq -w 8 11"),
            ("od", "printf 'ab\\001\\377\\n' > f; od -c f; od -A x -t x1 f; od -t d2 f; echo hi | od -b"),
            ("head tail cut paste", "seq 20 > f; head -3 f; tail -2 f; head -c 5 f | od -c; echo a:b:c | cut -d: -f2; paste -d, f f | tail -1"),
            ("rev tac fold nl", "echo abc | rev; seq 3 | tac; echo abcdefghij | fold -w 3; printf 'x\\ny\\n' | nl"),
            ("hashes", "seq 100 > f; sha256sum f; md5sum f; sha1sum f; sha512sum f | cut -c1-32; printf '' | sha256sum"),
            ("sha256sum -c", "seq 50 > a; seq 60 > b; sha256sum a b > sums; sha256sum -c sums; echo x >> b; sha256sum -c sums; echo $?"),
            ("base64 xxd", "seq 20 | base64; echo hello | base64 | base64 -d; echo hi | xxd; echo hi | xxd -p | xxd -r -p"),
            ("big sort", "seq 30000 | sort -r | head -3; seq 30000 | sort -n -r | tail -2; seq 5000 | sed 's/$/ x/' | sort -k1,1n | md5sum"),
            ("sed -E and awk programs", "echo 'a1b22c333' | sed -E 's/([0-9]+)/<\\1>/g'; echo 'one two three' | awk '{for (i=NF; i>0; i--) printf \"%s \", toupper($i); print length($0), substr($2,1,2)}'; seq 10 | awk '{a[$1%3]+=$1} END {for (k=0;k<3;k++) print k, a[k]}'"),
            ("cut tr classes tee", "echo hello world | cut -c2-7; echo MiXeD | tr '[:upper:]' '[:lower:]'; echo tee | tee f | cat; cat f; echo abc | dd conv=ucase 2>/dev/null"),
            ("bc dc factor", "echo '2^64 + 1' | bc; echo 'scale=5; 1/7' | bc; dc -e '2 10 ^ p'; factor 1234567890"),
            ("strings cmp crc32", "printf 'ab\\0longer string\\0x' > f; strings f; printf abc > a; printf abd > b; cmp a b; echo $?; cmp -l a b; crc32 a"),
            ("md5sum -c and sha3", "seq 9 > f; md5sum f > m; md5sum -c m; sha3sum f; sha1sum < f"),
        ],
    );
}

#[test]
fn file_tools() {
    compare(
        "files",
        &[
            ("mkdir touch find", "mkdir -p a/b/c; touch a/x a/b/y; find . | sort; find . -type d | sort; find . -name y; find . -type f -name '*' | sort"),
            ("find -exec", "mkdir d; echo 1 > d/f1; echo 2 > d/f2; find d -type f -exec cat {} \\; | sort; find d -type f | sort | xargs wc -c"),
            ("cp", "echo data > f; cp f g; cat g; cp f g2 && cmp f g2 && echo same"),
            ("cp -r", "mkdir -p s/d/e; echo 1 > s/d/f; echo 2 > s/d/e/g; cp -r s t; find t | sort; cat t/d/f t/d/e/g; cp -r s t; find t | sort | wc -l"),
            ("mv", "echo 1 > a; mv a b; ls; mkdir d; mv b d/; ls d; mv d e; ls; mv e/b e/c; ls e; mv missing x; echo $?"),
            ("ln -s", "echo x > f; ln -s f l; cat l; readlink l; ln -s missing dangling; test -e dangling; echo $?; test -L dangling; echo $?; ln -s . self; cat self/self/self/f"),
            ("ln hard", "echo x > f; ln f g; stat -c '%h %s' f g; echo y >> g; cat f; rm f; cat g; stat -c %h g"),
            ("symlinked dirs", "mkdir -p real/sub; echo in > real/sub/f; ln -s real link; cat link/sub/f; ls link; cd link/sub && cat f; cd ../..; readlink -f link >/dev/null; echo $?"),
            ("chmod stat", "touch f; chmod 751 f; stat -c %a f; chmod u-x,g+w f; stat -c %a f; chmod a=r f; stat -c '%a %s %F' f; mkdir d; chmod 700 d; stat -c '%a %F' d; chmod -R 755 d; stat -c %a d"),
            ("rm rmdir", "mkdir -p a/b; touch a/b/c; rmdir a/b; echo $?; rm -r a; ls; mkdir x; rmdir x; ls | wc -l; rm missing; echo $?; rm -f missing; echo $?"),
            ("ls", "mkdir d; touch d/b d/a d/.h; ls d; ls -a d; ls -1 d; ls -d d; ls nothing; echo $?"),
            ("truncate dd", "truncate -s 10 f; stat -c %s f; dd if=/dev/zero of=g bs=512 count=3 2>/dev/null; stat -c %s g; dd if=f of=h bs=1 skip=2 2>/dev/null; wc -c < h"),
            ("dev null zero", "echo gone > /dev/null; head -c 8 /dev/zero | od -A n -t x1; cat /dev/null | wc -c"),
            ("rename over", "echo a > a; echo b > b; mv a b; cat b; ls; mkdir d1 d2; touch d2/x; mv d1 d2 2>/dev/null; echo $?; ls d2"),
            ("tmp", "echo in tmp > /tmp/t$$; cat /tmp/t$$; rm /tmp/t$$; test -d /tmp && echo tmp is a directory"),
            ("unlinked open file", "echo keep > f; exec 5< f; rm f; cat <&5; ls | wc -l"),
            ("find predicates", "mkdir -p a/b; touch a/e; echo x > a/b/f; chmod 700 a/b/f; find . -maxdepth 1 | sort; find . -empty | sort; find . -perm 700; find . -size -2 -type f | sort; find . -type f -print0 | xargs -0 ls"),
            ("cp -a and ln -sf", "mkdir -p d/s; echo 1 > d/s/f; ln -s s/f d/l; chmod 750 d/s; cp -a d e; find e | sort; stat -c '%a %F' e/s e/l; readlink e/l; ln -sf other e/l; readlink e/l"),
            ("paths relative to pwd", "mkdir -p x/y; ln -s x/y z; readlink -f z | sed \"s|^$(pwd)/||\"; realpath x/y/../y | sed \"s|^$(pwd)/||\"; (cd z && pwd -P | sed \"s|^$(dirname $(dirname $(pwd -P)))/||\")"),
            ("mktemp", "d=$(mktemp -d -p .); test -d \"$d\" && echo dir; f=$(mktemp -p .); test -f \"$f\" && echo file; ls | wc -l"),
            ("long names", "n=$(printf '%0200d' 0); touch $n; ls | wc -c; mkdir -p $n.d/$n; echo ok > $n.d/$n/f; cat $n.d/$n/f; touch $(printf '%0256d' 0); echo $?"),
            ("many files", "for i in $(seq 300); do echo $i > f$i; done; ls | wc -l; cat f1 f150 f300; rm f*; ls | wc -l"),
            ("deep tree", "p=.; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do p=$p/d$i; done; mkdir -p $p; echo deep > $p/f; find . -name f; cat $p/f; rm -r d1; ls | wc -l"),
        ],
    );
}

#[test]
fn archives_and_compression() {
    compare(
        "archives",
        &[
            ("tar round trip", "mkdir -p d/s; echo a > d/f; echo b > d/s/g; ln -s f d/l; tar cf x.tar d; tar tf x.tar | sort; mkdir o; tar xf x.tar -C o; find o | sort; cat o/d/s/g; readlink o/d/l"),
            ("tar gzip", "mkdir d; seq 1000 > d/n; tar czf x.tgz d; tar tzf x.tgz; rm -r d; tar xzf x.tgz; wc -l d/n; sha256sum d/n"),
            ("tar to stdout", "mkdir d; echo abc > d/f; tar cf - d | tar xOf - d/f"),
            ("gzip gunzip files", "seq 1000 > f; gzip -9 f; ls; gunzip f.gz; ls; wc -l f; gzip -c f | gunzip | cmp - f && echo same"),
            ("gzip bytes", "seq 500 | gzip -c | sha256sum; seq 500 | gzip -1 -c | sha256sum; seq 500 > f; gzip -9 -c f | sha256sum; gzip -c f | wc -c"),
            ("gzip bad input", "echo not gzip > f.gz; gunzip f.gz; echo $?; ls"),
            ("bzip2", "seq 2000 > f; bzip2 -c f | sha256sum; bzip2 f; ls; bunzip2 f.bz2; wc -l f; seq 100 | bzip2 | bzcat | tail -1"),
            ("cpio", "mkdir -p d/e; echo 1 > d/f; echo 2 > d/e/g; find d | sort | cpio -o -H newc > a.cpio 2>/dev/null; cpio -t < a.cpio 2>/dev/null; mkdir o; cd o; cpio -i -d < ../a.cpio 2>/dev/null; cat d/e/g"),
            ("tar long names and excludes", "n=$(printf '%0150d' 1); mkdir -p d/$n; echo deep > d/$n/f; echo skip > d/x.log; tar cf t.tar --exclude='*.log' d; tar tf t.tar | sort | cut -c1-20; mkdir o; tar xf t.tar -C o; cat o/d/$n/f; ls o/d | wc -l"),
            ("gzip truncated", "seq 3000 | gzip > n.gz; head -c 100 n.gz > t.gz; gunzip -c t.gz > /dev/null; echo $?; gzip -t n.gz; echo $?"),
            ("zcat and pipes", "seq 3000 | gzip > n.gz; zcat n.gz | tail -2; gunzip -c n.gz | sha256sum"),
        ],
    );
}
