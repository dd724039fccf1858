# The toolchain's builder, run by Debian's static busybox (`busybox sh -e`): $debs holds the
# pinned .debs, $busybox the busybox directory; everything lands in $out as the packages'
# own tree (bin, lib, lib64, usr), made to run from the store.
bb=$busybox/busybox

# 1. Unpack every package (dpkg-deb -x: the data member, modes and symlinks kept).
for deb in $debs/*.deb; do
    $bb dpkg-deb -x "$deb" "$out"
done

# 2. What no build here uses: documentation, translations, and GCC's LTO back end (lto1,
#    lto-dump: 61 MiB of the 218 the tree has; -flto is not supported by this toolchain).
$bb rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/info" \
    "$out/usr/share/locale" "$out/usr/share/lintian" "$out/usr/share/bug" "$out/usr/share/gdb" \
    "$out/usr/lib/gcc/x86_64-linux-gnu/12/lto1" "$out/usr/bin/x86_64-linux-gnu-lto-dump-12" \
    "$out/usr/bin/lto-dump-12"

# 3. Absolute symlinks (/lib64/ld-linux-x86-64.so.2 -> /lib/..., libc6-dev's lib*.so) point
#    into $out instead.
$bb find "$out" -type l | while read -r link; do
    target=$($bb readlink "$link")
    case $target in
        /*) $bb ln -sfn "$out$target" "$link" ;;
    esac
done

# 4. ELF files get the store's interpreter and a RUNPATH, as nixpkgs' patchelf hooks do; Debian's
#    patchelf does it, started through the tree's own ld.so. It runs from copies in $TMPDIR,
#    because it rewrites the very files (libc, libstdc++) the running patchelf has mapped.
libdir=$out/lib/x86_64-linux-gnu
rpath=$libdir:$out/usr/lib/x86_64-linux-gnu
interp=$libdir/ld-linux-x86-64.so.2
pe=$TMPDIR/patchelf
$bb mkdir -p "$pe"
for f in "$interp" "$libdir/libc.so.6" "$libdir/libm.so.6" "$libdir/libgcc_s.so.1" \
    "$out/usr/lib/x86_64-linux-gnu/libstdc++.so.6" "$out/usr/bin/patchelf"; do
    $bb cp -L "$f" "$pe/"
done
: > "$TMPDIR/exes"
: > "$TMPDIR/libs"
$bb find "$out" -type f \( -perm -u+x -o -name '*.so*' \) | while read -r f; do
    [ "$($bb head -c 4 "$f" | $bb od -An -c | $bb tr -d ' ')" = '177ELF' ] || continue
    case $f in */gconv/*) continue ;; esac             # glibc's iconv modules need only libc
    case ${f##*/} in
        ld-linux-x86-64.so.2 | libc.so.6) ;;           # the loader, and libc (needs only it)
        *.so | *.so.*) echo "$f" >> "$TMPDIR/libs" ;;  # shared libraries: RUNPATH
        *.o) ;;                                        # objects (crt1.o …)
        *) echo "$f" >> "$TMPDIR/exes" ;;              # executables: interpreter and RUNPATH
    esac
done
$bb xargs < "$TMPDIR/exes" "$pe/ld-linux-x86-64.so.2" --library-path "$pe" "$pe/patchelf" --set-interpreter "$interp" --set-rpath "$rpath"
$bb xargs < "$TMPDIR/libs" "$pe/ld-linux-x86-64.so.2" --library-path "$pe" "$pe/patchelf" --set-rpath "$rpath"

# 5. Scripts that name /bin/sh or /bin/bash (gzip's and xz's front ends) name the store's bash.
for f in "$out"/bin/* "$out"/usr/bin/*; do
    [ -L "$f" ] && continue
    case $($bb head -c 12 "$f") in
        '#!/bin/sh'* | '#! /bin/sh'* | '#!/bin/bash'*)
            $bb sed -i "1s|^#! */bin/[a-z]*|#!$out/bin/bash|" "$f" ;;
    esac
done

# 6. The names a build looks for in PATH: sh, awk, and the compiler driver. `gcc`, `cc` and
#    `cpp` are wrappers, as nixpkgs' cc-wrapper is: headers, startup files, libraries and ld
#    scripts from the store tree (--sysroot), the store's ld.so as the interpreter of what it
#    links and the store's libraries as its RUNPATH.
$bb ln -s bash "$out/bin/sh"
$bb ln -s ../usr/bin/gawk "$out/bin/awk"
flags="--sysroot=$out -B$out/usr/bin/ -Wl,--dynamic-linker=$interp -Wl,-rpath,$rpath"
for name in gcc cc; do
    printf '#!%s\nexec %s %s "$@"\n' "$out/bin/bash" "$out/usr/bin/gcc-12" "$flags" > "$out/bin/$name"
done
printf '#!%s\nexec %s %s "$@"\n' "$out/bin/bash" "$out/usr/bin/cpp-12" "--sysroot=$out" > "$out/bin/cpp"
$bb chmod 0755 "$out/bin/gcc" "$out/bin/cc" "$out/bin/cpp"
