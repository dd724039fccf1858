/* A static program with no libc, for the sandbox tests: `probe MODE [ARG]`.
 *
 * Modes that only fault or report errno values are safe to run natively too: the tests take the
 * expected outcome from a native run. Modes that exhaust a resource (memory, processes, CPU,
 * disk, log) run only in the sandbox, against the limits the test asks for. */
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}
static long sys3(long n, long a, long b, long c) { return sys6(n, a, b, c, 0, 0, 0); }
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(int fd, const char *s) { sys3(1, fd, (long)s, len(s)); }
static int eq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }
static void putn(long v) {
    char b[24];
    int i = 23;
    int neg = v < 0;
    unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    b[i] = 0;
    do { b[--i] = '0' + u % 10; u /= 10; } while (u);
    if (neg) b[--i] = '-';
    put(1, b + i);
}
static void report(const char *what, long v) { put(1, what); put(1, " "); putn(v); put(1, "\n"); }
static void exit_(long code) { for (;;) sys3(231, code, 0, 0); }

enum { READ = 0, WRITE = 1, OPEN = 2, CLOSE = 3, STAT = 4, POLL = 7, MMAP = 9, MPROTECT = 10, MUNMAP = 11, BRK = 12,
       SIGACTION = 13, SIGPROCMASK = 14, WRITEV = 20, PIPE = 22, PAUSE = 34, GETPID = 39, FORK = 57, EXECVE = 59,
       UNAME = 63, GETCWD = 79, ARCH_PRCTL = 158, GETRLIMIT = 97, CLOCK_GETTIME = 228, PIPE2 = 293 };

static char page[4096] __attribute__((aligned(4096)));
static char big[1 << 20];

/* Every call here gets a pointer it may not use; Linux answers EFAULT (or its own errno), and so
 * must the sandbox: the agent's memory is never read or written for the process. */
static void bad_pointers(void) {
    static const unsigned long bad[] = {0xffff800000000000UL, 0xffffffff80100000UL, 0x8000000000000000UL,
                                        0x0000800000000000UL, 0xfffffffffffff000UL, 0, 8};
    long iov[2] = {0, 16};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long p = (long)bad[i];
        iov[0] = p;
        put(1, "pointer "); putn(i); put(1, ":");
        long r[] = {
            sys3(READ, 0, p, 16),            /* stdin is /dev/null natively too */
            sys3(WRITE, 1, p, 16),
            sys3(OPEN, p, 0, 0),
            sys3(STAT, p, (long)page, 0),
            sys3(STAT, (long)"/", p, 0),
            sys3(PIPE2, p, 0, 0),
            sys3(UNAME, p, 0, 0),
            sys3(GETCWD, p, 4096, 0),
            sys3(CLOCK_GETTIME, 0, p, 0),
            sys6(SIGACTION, 10, p, 0, 8, 0, 0),
            sys6(SIGPROCMASK, 0, p, 0, 8, 0, 0),
            sys3(POLL, p, 1, 0),
            sys3(WRITEV, 1, (long)iov, 1),
            sys3(WRITEV, 1, p, 1),
            sys3(EXECVE, p, 0, 0),
            sys3(EXECVE, (long)"/nonexistent", p, 0),
        };
        for (unsigned j = 0; j < sizeof r / sizeof r[0]; j++) { put(1, " "); putn(r[j]); }
        put(1, "\n");
    }
}

/* Maps 1 MiB at a time and touches every page until mmap fails. */
static void eat_mmap(void) {
    long mib = 0;
    for (;;) {
        long m = sys6(MMAP, 0, 1 << 20, 3, 0x22, -1, 0);
        if (m < 0) { report("mmap: errno after MiB", -m); report("MiB", mib); exit_(0); }
        for (long o = 0; o < (1 << 20); o += 4096) ((volatile char *)m)[o] = 1;
        mib++;
    }
}

static void eat_brk(void) {
    long start = sys3(BRK, 0, 0, 0), cur = start;
    for (;;) {
        long want = cur + (1 << 20);
        long got = sys3(BRK, want, 0, 0);
        if (got != want) { report("brk: MiB", (cur - start) >> 20); exit_(0); }
        for (long o = cur; o < want; o += 4096) ((volatile char *)o)[0] = 1;
        cur = want;
    }
}

/* One page every GiB: each needs page tables of its own. */
static void sparse_mmap(void) {
    long n = 0;
    for (;;) {
        long va = 0x100000000000L + (n << 30);
        long m = sys6(MMAP, va, 4096, 3, 0x32, -1, 0);
        if (m < 0) { report("sparse mmap: errno", -m); report("pages", n); exit_(0); }
        ((volatile char *)m)[0] = 1;
        n++;
    }
}

static void fork_bomb(void) {
    long n = 0;
    for (;;) {
        long r = sys3(FORK, 0, 0, 0);
        if (r == 0) for (;;) sys3(PAUSE, 0, 0, 0);
        if (r < 0) { report("fork: errno", -r); report("children", n); exit_(0); }
        n++;
    }
}

/* Holds 32 MiB, then forks copies of itself until fork fails. */
static void fork_memory(void) {
    long m = sys6(MMAP, 0, 32 << 20, 3, 0x22, -1, 0);
    if (m < 0) { report("mmap: errno", -m); exit_(1); }
    for (long o = 0; o < (32 << 20); o += 4096) ((volatile char *)m)[o] = 1;
    long n = 0;
    for (;;) {
        long r = sys3(FORK, 0, 0, 0);
        if (r == 0) for (;;) sys3(PAUSE, 0, 0, 0);
        if (r < 0) { report("fork: errno", -r); report("children", n); exit_(0); }
        n++;
    }
}

/* Reads 64 MiB from /dev/zero into a mapping, again and again: each call costs the agent a
 * 64 MiB copy into the process's pages and the process almost no ring-3 time. (A loop of
 * forks did this before fork became copy-on-write.) */
static void zero_loop(void) {
    long m = sys6(MMAP, 0, 64 << 20, 3, 0x22, -1, 0);
    if (m < 0) { report("mmap: errno", -m); exit_(1); }
    long fd = sys3(OPEN, (long)"/dev/zero", 0, 0);
    if (fd < 0) { report("open: errno", -fd); exit_(1); }
    for (;;) {
        long r = sys3(READ, fd, m, 64 << 20);
        if (r <= 0) { report("read", r); exit_(1); }
    }
}

static void write_file(void) {
    long fd = sys3(OPEN, (long)"big", 0101, 0644); /* O_CREAT | O_WRONLY */
    long total = 0;
    for (int i = 0; i < 2048; i++) {
        long r = sys3(WRITE, fd, (long)big, sizeof big);
        if (r < 0) { report("write: errno", -r); report("bytes", total); exit_(0); }
        total += r;
    }
    report("wrote", total);
    exit_(1);
}

static void write_stdout(void) {
    for (int i = 0; i < 2048; i++) sys3(WRITE, 1, (long)big, sizeof big);
    exit_(0);
}

/* writev of 1024 iovecs of 1 MiB each to stdout: one call, at most one bounded write. */
static void writev_hog(void) {
    static long iov[2048];
    for (int i = 0; i < 1024; i++) { iov[2 * i] = (long)big; iov[2 * i + 1] = sizeof big; }
    long r = sys3(WRITEV, 2, (long)iov, 1024);
    report("writev", r);
    exit_(0);
}

/* Fills as many pipes as the descriptor limit allows in `procs - 1` children (fewer if a fork
 * fails); each child then creates a file `d<pid>` (no pipe: pipe memory may be exhausted by
 * then) and waits. Once every child has, the builder fills pipes too and reports whether a
 * write met ENOMEM. */
static long fill_pipes(void) {
    long enomem = 0;
    for (;;) {
        int fds[2];
        if (sys3(PIPE2, (long)fds, 04000, 0) < 0) return enomem; /* O_NONBLOCK; EMFILE ends it */
        long r;
        while ((r = sys3(WRITE, fds[1], (long)big, 65536)) > 0) {}
        if (r == -12) enomem = 1;
    }
}

static void pipe_hog(long procs) {
    long kids = 0;
    for (long i = 1; i < procs; i++) {
        long r = sys3(FORK, 0, 0, 0);
        if (r <= 0) break;
        kids++;
    }
    long me = sys3(GETPID, 0, 0, 0);
    if (me != 1) {
        char name[8] = {'d', '0' + me / 100 % 10, '0' + me / 10 % 10, '0' + me % 10, 0};
        fill_pipes();
        sys3(CLOSE, sys3(OPEN, (long)name, 0101, 0644), 0, 0);
        for (;;) sys3(PAUSE, 0, 0, 0);
    }
    for (long pid = 2; pid <= kids + 1; pid++) {
        char n[8] = {'d', '0' + pid / 100 % 10, '0' + pid / 10 % 10, '0' + pid % 10, 0};
        while (sys3(STAT, (long)n, (long)page, 0) < 0) sys3(24, 0, 0, 0); /* sched_yield */
    }
    /* Last: the children hold more pipe memory than the limit allows (or could not all fork). */
    long enomem = fill_pipes();
    report("processes", kids + 1);
    report("builder met ENOMEM", enomem);
    exit_(0);
}

/* Files with 255-byte names until creation fails, then the directory listed. */
static void inode_hog(void) {
    char name[256];
    for (int i = 0; i < 255; i++) name[i] = 'n';
    name[255] = 0;
    long n = 0, err = 0;
    for (;;) {
        long v = n;
        for (int i = 0; i < 12; i++) { name[i] = 'a' + v % 26; v /= 26; }
        long fd = sys3(OPEN, (long)name, 0301, 0644); /* O_CREAT | O_EXCL | O_WRONLY */
        if (fd < 0) { err = -fd; break; }
        sys3(CLOSE, fd, 0, 0);
        n++;
    }
    report("create: errno", err);
    report("files", n);
    long dir = sys3(OPEN, (long)".", 0200000, 0); /* O_DIRECTORY */
    long entries = 0, r;
    while ((r = sys3(217, dir, (long)big, sizeof big)) > 0) {
        for (long o = 0; o < r; o += *(unsigned short *)(big + o + 16)) entries++;
    }
    report("listed", entries);
    exit_(0);
}

/* A system call with RFLAGS bits `set` (NT 0x4000, AC 0x40000, ID 0x200000) turned on around it:
 * Linux masks them on entry (SFMASK) and the call works; so must the sandbox. */
static long sys_with_flags(long n, long a, long b, long c, unsigned long set) {
    long r;
    __asm__ volatile("pushfq; orq %5, (%%rsp); popfq; syscall; pushfq; andq %6, (%%rsp); popfq"
                     : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(set), "r"(~set) : "rcx", "r11", "memory", "cc");
    return r;
}

static void flags_syscalls(void) {
    static const struct { const char *name; unsigned long bits; } f[] = {
        { "nt", 0x4000 }, { "ac", 0x40000 }, { "id", 0x200000 }, { "nt+ac+id", 0x244000 } };
    for (int i = 0; i < 4; i++) {
        long pid = sys_with_flags(GETPID, 0, 0, 0, f[i].bits);
        long w = sys_with_flags(WRITE, 1, (long)"written\n", 8, f[i].bits);
        put(1, f[i].name);
        report(": getpid positive, write", (pid > 0) * 100 + w);
    }
    exit_(0);
}

/* The top page of the user half: Linux never maps it (TASK_SIZE_MAX), so no instruction ends at
 * the non-canonical 0x800000000000. If it were mapped, a `syscall` in its last two bytes would
 * return to that address. */
static void top_page(void) {
    long top = 0x7ffffffff000L;
    long r = sys6(MMAP, top, 4096, 7, 0x32 /* MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED */, -1, 0);
    report("mmap top page", r);
    if (r == top) {
        unsigned char *p = (unsigned char *)top;
        p[4094] = 0x0f; p[4095] = 0x05; /* syscall */
        __asm__ volatile("jmp *%0" : : "r"(top + 4094), "a"(GETPID) : "rcx", "r11", "memory");
    }
    report("mmap across the top", sys6(MMAP, top - 4096, 8192, 3, 0x32, -1, 0));
    report("mprotect top page", sys3(MPROTECT, top, 4096, 3));
    exit_(0);
}

/* A `syscall` whose two bytes straddle two pages (0f at the end of one, 05 at the start of the
 * next), then `ret`: the agent reads the instruction through the page tables, page by page. With
 * `nx` the second page is not executable: the fetch faults (SIGSEGV), as natively. */
static void syscall_straddle(int nx) {
    unsigned char *p = (unsigned char *)sys6(MMAP, 0, 8192, 7, 0x22, -1, 0);
    p[4095] = 0x0f; p[4096] = 0x05; p[4097] = 0xc3;
    if (nx) sys3(MPROTECT, (long)p + 4096, 4096, 3);
    long r;
    __asm__ volatile("call *%1" : "=a"(r) : "r"(p + 4095), "a"(GETPID) : "rcx", "r11", "memory");
    report("straddling syscall positive", r > 0);
    exit_(0);
}

/* N system calls in a loop (the system-call path's cost; the NMI test's target). */
static void syscall_loop(const char *n) {
    long count = 0;
    while (*n >= '0' && *n <= '9') count = count * 10 + (*n++ - '0');
    long sum = 0;
    for (long i = 0; i < count; i++) sum += sys3(GETPID, 0, 0, 0) > 0;
    report("syscalls", sum);
    exit_(0);
}

/* The same with RSP pointing into the agent's image at every `syscall`: an event delivered at the
 * system-call entry must never push its frame there. */
static void syscall_loop_kernel_rsp(const char *n) {
    long count = 0;
    while (*n >= '0' && *n <= '9') count = count * 10 + (*n++ - '0');
    long sum = 0;
    for (long i = 0; i < count; i++) {
        long r;
        __asm__ volatile("mov %%rsp, %%r12; mov %2, %%rsp; syscall; mov %%r12, %%rsp"
                         : "=a"(r) : "a"(GETPID), "r"(0xffffffff80101000UL) : "rcx", "r11", "r12", "memory");
        sum += r > 0;
    }
    report("syscalls", sum);
    exit_(0);
}

static void puthex(unsigned long v) {
    char b[17];
    for (int i = 15; i >= 0; i--) { b[i] = "0123456789abcdef"[v & 15]; v >>= 4; }
    b[16] = 0;
    put(1, b);
}

/* What the CPU tells a builder, twice over: the time-stamp counter (rdtsc, rdtsc, rdtscp) and
 * CPUID for the leaves a libc reads. Two runs must print the same. */
static void cpu(void) {
    for (int i = 0; i < 2; i++) {
        unsigned lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        put(1, "rdtsc "); puthex((unsigned long)hi << 32 | lo); put(1, "\n");
    }
    unsigned lo, hi, aux;
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
    put(1, "rdtscp "); puthex((unsigned long)hi << 32 | lo); put(1, " "); puthex(aux); put(1, "\n");
    static const unsigned leaves[] = {0, 1, 7, 0xd, 0x40000000, 0x80000000, 0x80000001, 0x80000002, 0x80000003,
                                      0x80000004, 0x80000005, 0x80000006, 0x80000008};
    for (int pass = 0; pass < 2; pass++)
        for (unsigned i = 0; i < sizeof leaves / sizeof leaves[0]; i++) {
            unsigned a, b, c, d;
            __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaves[i]), "c"(0));
            put(1, "cpuid "); puthex(leaves[i]); put(1, " "); puthex(a); put(1, " "); puthex(b); put(1, " ");
            puthex(c); put(1, " "); puthex(d); put(1, "\n");
        }
    exit_(0);
}

__attribute__((used)) static void start_c(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    const char *mode = argc > 1 ? argv[1] : "hello";
    if (eq(mode, "hello")) {
        put(1, "hello from ring 3\n");
        for (long i = 0; i < argc; i++) { put(1, argv[i]); put(1, "\n"); }
        for (char **e = envp; *e; e++) { put(2, *e); put(2, "\n"); }
        exit_(42);
    } else if (eq(mode, "efault")) {
        long r = sys3(WRITE, 1, 0xffffffff80100000L, 16);
        put(1, r == -14 ? "EFAULT\n" : "no EFAULT\n");
        long r2 = sys3(WRITE, 1, 0x8000000000000000L, 16);
        put(1, r2 == -14 ? "EFAULT\n" : "no EFAULT\n");
        exit_(0);
    } else if (eq(mode, "enosys")) {
        long r = sys3(9999, 0, 0, 0);
        put(1, r == -38 ? "ENOSYS\n" : "no ENOSYS\n");
        exit_(0);
    }
    /* Privileged instructions: each faults in ring 3. */
    else if (eq(mode, "hlt")) __asm__ volatile("hlt");
    else if (eq(mode, "cli")) __asm__ volatile("cli");
    else if (eq(mode, "sti")) __asm__ volatile("sti");
    else if (eq(mode, "in")) { unsigned char v; __asm__ volatile("inb $0x70, %0" : "=a"(v)); }
    else if (eq(mode, "out")) __asm__ volatile("outb %0, $0xf4" : : "a"((unsigned char)0));
    else if (eq(mode, "outl-dx")) __asm__ volatile("outl %0, %%dx" : : "a"(0), "d"(0xcf8));
    else if (eq(mode, "wrmsr")) __asm__ volatile("wrmsr" : : "c"(0xc0000082), "a"(0), "d"(0));
    else if (eq(mode, "rdmsr")) { unsigned lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xc0000082)); }
    else if (eq(mode, "lgdt")) { static char d[10]; __asm__ volatile("lgdt %0" : : "m"(d)); }
    else if (eq(mode, "lidt")) { static char d[10]; __asm__ volatile("lidt %0" : : "m"(d)); }
    else if (eq(mode, "mov-cr3")) __asm__ volatile("mov %0, %%cr3" : : "r"(0L));
    else if (eq(mode, "swapgs")) __asm__ volatile("swapgs");
    else if (eq(mode, "int3")) __asm__ volatile("int3");
    else if (eq(mode, "int80")) __asm__ volatile("int $0x80" : : "a"(60), "D"(5));
    else if (eq(mode, "int-timer")) __asm__ volatile("int $0x20");
    else if (eq(mode, "ud2")) __asm__ volatile("ud2");
    /* The agent's memory: reads, writes, jumps. */
    else if (eq(mode, "kernel-read")) { put(1, "reading agent memory\n"); (void)*(volatile char *)0xffffffff80100000UL; }
    else if (eq(mode, "kernel-write")) *(volatile char *)0xffff800000200000UL = 1;
    else if (eq(mode, "direct-map-read")) (void)*(volatile char *)0xffff800000000000UL;
    else if (eq(mode, "image-write")) *(volatile long *)0xffffffff80000000UL = 0;
    else if (eq(mode, "jump-kernel")) ((void (*)(void))0xffffffff80100000UL)();
    else if (eq(mode, "jump-noncanonical")) ((void (*)(void))0x8000000000000000UL)();
    else if (eq(mode, "write-text")) *(volatile char *)(long)start_c = 0;
    else if (eq(mode, "exec-data")) { page[0] = (char)0xc3; ((void (*)(void))page)(); }
    else if (eq(mode, "bad-pointers")) { bad_pointers(); exit_(0); }
    else if (eq(mode, "flags-syscall")) flags_syscalls();
    else if (eq(mode, "top-page")) top_page();
    else if (eq(mode, "syscall-straddle")) syscall_straddle(0);
    else if (eq(mode, "syscall-straddle-nx")) syscall_straddle(1);
    else if (eq(mode, "syscall-loop")) syscall_loop(argc > 2 ? argv[2] : "1000");
    else if (eq(mode, "syscall-loop-kernel-rsp")) syscall_loop_kernel_rsp(argc > 2 ? argv[2] : "1000");
    else if (eq(mode, "cpu")) cpu();
    /* Resources: the limits end these. */
    else if (eq(mode, "spin")) for (;;) __asm__ volatile("");
    else if (eq(mode, "fork-bomb")) fork_bomb();
    else if (eq(mode, "fork-memory")) fork_memory();
    else if (eq(mode, "zero-loop")) zero_loop();
    else if (eq(mode, "eat-mmap")) eat_mmap();
    else if (eq(mode, "eat-brk")) eat_brk();
    else if (eq(mode, "sparse-mmap")) sparse_mmap();
    else if (eq(mode, "write-file")) write_file();
    else if (eq(mode, "write-stdout")) write_stdout();
    else if (eq(mode, "writev-hog")) writev_hog();
    else if (eq(mode, "pipe-hog")) pipe_hog(argc > 2 ? (argv[2][0] - '0') * 10 + (argv[2][1] - '0') : 1);
    else if (eq(mode, "inode-hog")) inode_hog();
    exit_(3);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
