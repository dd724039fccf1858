// A dynamically linked (glibc) test program for the sandbox (tests/tests/sandbox_dynamic.rs):
// each mode prints only what Linux and the sandbox must agree on (no addresses, pids or times),
// so a native run and a run under the agent give the same bytes.
//
//   dynamic auxv | fork | vfork | spawn | mmap | clock | calls | bench-fork N | bench-spawn N | noop
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sendfile.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <link.h>
#include <elf.h>

extern char **environ;
extern char _start[];

static void check(const char *what, int ok) { printf("%s: %s\n", what, ok ? "ok" : "FAILED"); }

static int wait_status(pid_t pid) {
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count_objects(struct dl_phdr_info *info, size_t size, void *data) {
    (void)info; (void)size;
    ++*(int *)data;
    return 0;
}

static int mode_auxv(void) {
    volatile double x = 2.0;
    check("AT_PAGESZ", getauxval(AT_PAGESZ) == 4096);
    check("AT_BASE (the interpreter was loaded)", getauxval(AT_BASE) != 0);
    check("AT_ENTRY is _start", getauxval(AT_ENTRY) == (unsigned long)_start);
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    int has_interp = 0;
    for (unsigned long i = 0; i < getauxval(AT_PHNUM); i++) has_interp |= ph[i].p_type == PT_INTERP;
    check("AT_PHDR/AT_PHNUM list PT_INTERP", has_interp && getauxval(AT_PHENT) == sizeof(ElfW(Phdr)));
    check("AT_RANDOM", getauxval(AT_RANDOM) != 0);
    check("AT_EXECFN", getauxval(AT_EXECFN) != 0);
    int objects = 0;
    dl_iterate_phdr(count_objects, &objects);
    // The program, libm, libc, ld.so and (natively) the vDSO.
    check("dl_iterate_phdr sees the program and its libraries", objects >= 4);
    printf("sqrt(2) = %.6f, cos(0) = %.1f\n", sqrt(x), cos(x - 2.0));
    return 0;
}

// Copy-on-write fork: each side sees its own writes only, the kernel's writes into a shared page
// (read(2) into it) stay on the side that made them, a read-only page stays read-only in the child.
static int mode_fork(void) {
    size_t n = 4 << 20;
    unsigned char *buf = malloc(n);
    static int counter = 5;
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 7);
    int up[2], down[2];
    if (pipe(up) || pipe(down)) return 1;
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= buf[i] == (unsigned char)(i * 7);
        for (size_t i = 0; i < n / 2; i++) buf[i] = 0xAA;
        counter = 99;
        if (write(up[1], "x", 1) != 1) ok = 0;
        char c;
        if (read(down[0], &c, 1) != 1) ok = 0;
        // The parent has written into the second half meanwhile: not here.
        for (size_t i = n / 2; i < n; i++) ok &= buf[i] == (unsigned char)(i * 7);
        for (size_t i = 0; i < n / 2; i++) ok &= buf[i] == 0xAA;
        ok &= counter == 99;
        _exit(ok ? 0 : 1);
    }
    // The kernel writes into a page the child still shares.
    if (read(up[0], buf + n - 100, 1) != 1) return 1;
    for (size_t i = n / 2; i < n - 200; i++) buf[i] = 0x55;
    if (write(down[1], "y", 1) != 1) return 1;
    int st = wait_status(pid);
    check("the child saw the parent's memory, then only its own writes", st == 0);
    int ok = 1;
    for (size_t i = 0; i < n / 2; i++) ok &= buf[i] == (unsigned char)(i * 7);
    for (size_t i = n / 2; i < n - 200; i++) ok &= buf[i] == 0x55;
    check("the parent kept its own memory", ok && counter == 5 && buf[n - 100] == 'x');
    // Grandchildren: three generations write the same page.
    static char page[4096] __attribute__((aligned(4096)));
    strcpy(page, "parent");
    pid = fork();
    if (pid == 0) {
        strcpy(page, "child");
        pid_t g = fork();
        if (g == 0) {
            strcpy(page, "grandchild");
            _exit(strcmp(page, "grandchild") ? 1 : 0);
        }
        int gs = wait_status(g);
        _exit(gs == 0 && strcmp(page, "child") == 0 ? 0 : 1);
    }
    check("three generations", wait_status(pid) == 0 && strcmp(page, "parent") == 0);
    // A read-only page stays read-only across fork: the child's write is SIGSEGV.
    char *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ro[0] = 'r';
    mprotect(ro, 4096, PROT_READ);
    pid = fork();
    if (pid == 0) {
        ro[0] = 'w';
        _exit(0);
    }
    printf("write to a read-only page in the child: status %d\n", wait_status(pid));
    // ... and made writable again in the parent, it is the parent's own.
    mprotect(ro, 4096, PROT_READ | PROT_WRITE);
    ro[0] = 'p';
    check("mprotect after fork", ro[0] == 'p');
    // Many forks in a row, each child writing its stack and heap.
    int all = 1;
    for (int i = 0; i < 20; i++) {
        pid = fork();
        if (pid == 0) {
            buf[i] = (unsigned char)i;
            _exit(buf[i] == i ? i : 255);
        }
        all &= wait_status(pid) == i;
    }
    check("20 forks", all && buf[3] == (unsigned char)(3 * 7));
    return 0;
}

// vfork: the child runs in the parent's memory until it execs or exits.
static int mode_vfork(void) {
    static volatile int shared = 1;
    pid_t pid = vfork();
    if (pid == 0) {
        shared = 42;
        _exit(3);
    }
    int st = wait_status(pid);
    printf("vfork: child status %d, the parent sees the child's write: %d\n", st, shared);
    pid = vfork();
    if (pid == 0) {
        char *argv[] = {"dynamic", "noop", NULL};
        execve("/proc/self/exe", argv, environ);
        _exit(127);
    }
    printf("vfork+execve: status %d\n", wait_status(pid));
    return 0;
}

static int mode_spawn(void) {
    pid_t pid;
    char *argv[] = {"dynamic", "noop", NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_RESETIDS | POSIX_SPAWN_SETSIGMASK);
    int r = posix_spawn(&pid, "/proc/self/exe", NULL, &attr, argv, environ);
    printf("posix_spawn (RESETIDS): %d, status %d\n", r, r == 0 ? wait_status(pid) : -1);
    // The child's failed execve reaches the parent through the shared memory of CLONE_VM.
    r = posix_spawn(&pid, "/nonexistent/program", NULL, NULL, argv, environ);
    printf("posix_spawn of a missing program: %s\n", r == ENOENT ? "ENOENT" : strerror(r));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "spawn.out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv2[] = {"dynamic", "hello", NULL};
    r = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv2, environ);
    int st = r == 0 ? wait_status(pid) : -1;
    char b[64] = {0};
    int fd = open("spawn.out", O_RDONLY);
    ssize_t got = read(fd, b, sizeof b - 1);
    printf("posix_spawn with a file action: %d, status %d, wrote %zd bytes: %s", r, st, got, b);
    return 0;
}

static int mode_mmap(void) {
    int fd = open("f", O_RDWR | O_CREAT | O_TRUNC, 0644);
    char page[4096];
    for (int k = 0; k < 3; k++) {
        memset(page, 'A' + k, sizeof page);
        if (write(fd, page, sizeof page) != sizeof page) return 1;
    }
    memset(page, 'Z', 100);
    if (write(fd, page, 100) != 100) return 1;
    char *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 4096);
    printf("private read-only at offset 4096: %c\n", p[0]);
    char *q = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 8192);
    printf("private writable at 8192: %c %c, past the end: %d\n", q[0], q[4096], q[4096 + 100]);
    q[0] = 'x';
    char c = 0;
    if (pread(fd, &c, 1, 8192) != 1) return 1;
    printf("a private write leaves the file alone: %c (mapping %c)\n", c, q[0]);
    char *s = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    printf("shared read-only: %c\n", s[0]);
    char *a = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 'q', 3 * 4096);
    char *f = mmap(a + 4096, 4096, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    printf("MAP_FIXED over a mapping: %s %c %c %c\n", f == a + 4096 ? "in place" : "moved", a[0], a[4096], a[8192]);
    munmap(a + 4096, 4096);
    unsigned char vec[3];
    int r1 = mincore(a, 4096, vec);
    int r2 = mincore(a, 3 * 4096, vec);
    printf("mincore: mapped %d, with a hole %d (%s)\n", r1, r2, r2 ? (errno == ENOMEM ? "ENOMEM" : "?") : "");
    char *m = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 2 * 4096; i++) m[i] = (char)(i % 251);
    char *g = mremap(m, 2 * 4096, 64 * 4096, MREMAP_MAYMOVE);
    int ok = g != MAP_FAILED;
    for (int i = 0; ok && i < 2 * 4096; i++) ok &= g[i] == (char)(i % 251);
    for (int i = 2 * 4096; ok && i < 64 * 4096; i++) ok &= g[i] == 0;
    g[64 * 4096 - 1] = 1;
    char *h = mremap(g, 64 * 4096, 4096, 0);
    check("mremap grows (contents kept, zeros after) and shrinks in place", ok && h == g && h[4095] == (char)(4095 % 251));
    errno = 0;
    void *bad = mremap(h, 4096, 1 << 30, 0);
    printf("mremap without MAYMOVE where it cannot grow: %s\n", bad == MAP_FAILED ? (errno == ENOMEM ? "ENOMEM" : "?") : "grew");
    char *big = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ok = 1;
    for (size_t i = 0; i < (16 << 20); i += 4096 * 17) ok &= big[i] == 0;
    big[(16 << 20) - 1] = 7;
    check("16 MiB of anonymous memory reads as zeros", ok);
    return 0;
}

static long long mtime_ns(const char *path) {
    struct stat st;
    if (stat(path, &st)) return -1;
    return st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(fd, s, strlen(s)) < 0) perror("write");
    close(fd);
}

static int mode_clock(void) {
    // Natively the file clock is coarse (a tick or so): sleep past it. In the sandbox sleeping
    // takes no time, and every change is a tick of its own.
    put("a", "a");
    usleep(20000);
    put("b", "b");
    check("a file written later is newer", mtime_ns("b") > mtime_ns("a"));
    struct timespec ts[2] = {{1400000000, 500000000}, {1400000000, 500000000}};
    check("utimensat", utimensat(AT_FDCWD, "a", ts, 0) == 0);
    printf("the time set is kept: %lld\n", mtime_ns("a"));
    usleep(20000);
    put("c", "c");
    check("a file written after a set time is newer", mtime_ns("c") > mtime_ns("a"));
    check("the clock is not behind the files", (long long)time(NULL) * 1000000000LL + 999999999 >= mtime_ns("c"));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    check("clock_gettime agrees", now.tv_sec * 1000000000LL + now.tv_nsec >= mtime_ns("c"));
    usleep(20000);
    put("a", "again");
    check("rewriting a makes it newest", mtime_ns("a") > mtime_ns("c"));
    ts[1].tv_nsec = 1000000000;
    check("a bad nanosecond count is EINVAL", utimensat(AT_FDCWD, "a", ts, 0) == -1 && errno == EINVAL);
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_NOW;
    long long before = mtime_ns("a");
    usleep(20000);
    check("UTIME_NOW", utimensat(AT_FDCWD, "a", ts, 0) == 0 && mtime_ns("a") > before);
    return 0;
}

static int mode_calls(void) {
    struct statfs sf;
    check("statfs", statfs(".", &sf) == 0 && sf.f_namelen == 255 && sf.f_bsize > 0);
    int fd = open("src", O_RDWR | O_CREAT | O_TRUNC, 0644);
    check("fstatfs", fstatfs(fd, &sf) == 0);
    struct sysinfo si;
    check("sysinfo", sysinfo(&si) == 0 && si.totalram > 0 && si.mem_unit > 0);
    struct rusage ru;
    check("getrusage", getrusage(RUSAGE_SELF, &ru) == 0 && getrusage(RUSAGE_CHILDREN, &ru) == 0);
    struct tms t;
    check("times", times(&t) != (clock_t)-1);
    check("time", time(NULL) != (time_t)-1);
    char data[10000];
    for (int i = 0; i < (int)sizeof data; i++) data[i] = (char)(i * 13);
    if (write(fd, data, sizeof data) != sizeof data) return 1;
    lseek(fd, 0, SEEK_SET);
    int out = open("dst", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ssize_t n, total = 0;
    while ((n = copy_file_range(fd, NULL, out, NULL, 4000, 0)) > 0) total += n;
    char back[10000];
    check("copy_file_range", total == sizeof data && pread(out, back, sizeof back, 0) == sizeof back && memcmp(back, data, sizeof data) == 0);
    off_t off = 5000;
    int out2 = open("dst2", O_RDWR | O_CREAT | O_TRUNC, 0644);
    n = sendfile(out2, fd, &off, 100000);
    check("sendfile from an offset", n == 5000 && off == 10000 && pread(out2, back, 5000, 0) == 5000 && memcmp(back, data + 5000, 5000) == 0);
    int p[2];
    if (pipe(p)) return 1;
    loff_t in_off = 0;
    ssize_t s1 = splice(fd, &in_off, p[1], NULL, 3000, 0);
    int out3 = open("dst3", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ssize_t s2 = splice(p[0], NULL, out3, NULL, 3000, 0);
    check("splice file -> pipe -> file", s1 == 3000 && s2 == 3000 && in_off == 3000 && pread(out3, back, 3000, 0) == 3000 && memcmp(back, data, 3000) == 0);
    errno = 0;
    printf("splice without a pipe: %s\n", splice(fd, NULL, out, NULL, 10, 0) == -1 && errno == EINVAL ? "EINVAL" : "?");
    int dot = open(".", O_RDONLY | O_DIRECTORY);
    mkdir("sub", 0755);
    check("chdir", chdir("sub") == 0 && access("src", F_OK) == -1);
    check("fchdir", fchdir(dot) == 0 && access("src", F_OK) == 0);
    errno = 0;
    printf("fchdir to a file: %s\n", fchdir(fd) == -1 && errno == ENOTDIR ? "ENOTDIR" : "?");
    uid_t u = getuid();
    gid_t g = getgid();
    check("setresuid/setresgid to oneself", setresuid(u, u, u) == 0 && setresgid(g, g, g) == 0 && setreuid(-1, u) == 0 && seteuid(u) == 0);
    uid_t r, e, s;
    check("getresuid", getresuid(&r, &e, &s) == 0 && r == u && e == u && s == u);
    struct sockaddr sa;
    socklen_t len = sizeof sa;
    errno = 0;
    printf("getpeername on a file: %s\n", getpeername(fd, &sa, &len) == -1 && errno == ENOTSOCK ? "ENOTSOCK" : "?");
    errno = 0;
    printf("getpeername on a closed descriptor: %s\n", getpeername(999, &sa, &len) == -1 && errno == EBADF ? "EBADF" : "?");
    check("access(/dev/null, W_OK)", access("/dev/null", W_OK) == 0);
    check("writing /dev/null", write(open("/dev/null", O_WRONLY), "x", 1) == 1);
    struct rlimit rl;
    check("getrlimit", getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 0);
    return 0;
}

static int bench(int n, int spawn) {
    char *argv[] = {"dynamic", "noop", NULL};
    for (int i = 0; i < n; i++) {
        pid_t pid;
        if (spawn) {
            if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ)) return 1;
        } else {
            pid = fork();
            if (pid == 0) {
                execve("/proc/self/exe", argv, environ);
                _exit(127);
            }
        }
        if (wait_status(pid) != 0) return 1;
    }
    printf("%d processes\n", n);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "noop")) return 0;
    if (!strcmp(m, "hello")) return printf("hello from a spawned child\n") < 0;
    if (!strcmp(m, "auxv")) return mode_auxv();
    if (!strcmp(m, "fork")) return mode_fork();
    if (!strcmp(m, "vfork")) return mode_vfork();
    if (!strcmp(m, "spawn")) return mode_spawn();
    if (!strcmp(m, "mmap")) return mode_mmap();
    if (!strcmp(m, "clock")) return mode_clock();
    if (!strcmp(m, "calls")) return mode_calls();
    if (!strcmp(m, "bench-fork") && argc > 2) return bench(atoi(argv[2]), 0);
    if (!strcmp(m, "bench-spawn") && argc > 2) return bench(atoi(argv[2]), 1);
    fprintf(stderr, "usage: dynamic auxv|fork|vfork|spawn|mmap|clock|calls|bench-fork N|bench-spawn N\n");
    return 2;
}
