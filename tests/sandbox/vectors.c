/* A static program with no libc for tests/tests/vector_state.rs: fills xmm0..xmm15 with a
 * pattern, makes a system call (or spins until the timer preempts it), and checks that every
 * vector register still holds its pattern afterwards. The agent uses vector registers in ring 0
 * (SHA-NI; the development image overwrites all sixteen after every trap from ring 3, on any
 * CPU), so only its FXSAVE/FXRSTOR around ring 3 keeps them. Prints one line per check and
 * "vector registers kept" at the end; natively Linux gives the same output. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys3(1, 1, (long)s, len(s)); }
static void exit_(long code) { for (;;) sys3(231, code, 0, 0); }

static unsigned char pattern[256] __attribute__((aligned(16)));
static unsigned char after[256] __attribute__((aligned(16)));

#define LOAD(n) "movdqa " #n "*16(%[p]), %%xmm" #n "\n"
#define STORE(n) "movdqa %%xmm" #n ", " #n "*16(%[q])\n"
#define ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define XMM "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
            "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

/* System call `n` with the registers loaded before and stored after, in one asm statement. */
static long vsys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile(ALL(LOAD) "syscall\n" ALL(STORE)
                     : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), [p] "r"(pattern), [q] "r"(after)
                     : "rcx", "r11", "memory", XMM);
    return r;
}

/* No system call: a loop long enough for the 10 ms timer to preempt it many times. */
static void vspin(long iterations) {
    __asm__ volatile(ALL(LOAD) "1: dec %[n]\n jnz 1b\n" ALL(STORE)
                     : [n] "+r"(iterations) : [p] "r"(pattern), [q] "r"(after) : "memory", XMM);
}

static int check(const char *what) {
    for (int i = 0; i < 256; i++)
        if (after[i] != pattern[i]) {
            char reg[3] = {'0' + (i / 16) / 10, '0' + (i / 16) % 10, 0};
            put("xmm"); put(reg[0] == '0' ? reg + 1 : reg); put(" changed across "); put(what); put("\n");
            return 0;
        }
    put("kept across "); put(what); put("\n");
    return 1;
}

enum { READ = 0, WRITE = 1, OPEN = 2, CLOSE = 3, GETPID = 39, FORK = 57, WAIT4 = 61, SCHED_YIELD = 24 };

static int run(const char *who) {
    static char buf[4096];
    for (int i = 0; i < 4096; i++) buf[i] = (char)(i * 7);
    int ok = 1;
    put(who); put(": ");
    ok &= (vsys(GETPID, 0, 0, 0), check("getpid"));
    long fd = sys3(OPEN, (long)"vectors.tmp", 0101 | 01000 /* O_WRONLY|O_CREAT|O_TRUNC */, 0644);
    put(who); put(": ");
    for (int i = 0; i < 64; i++) ok &= vsys(WRITE, fd, (long)buf, sizeof buf) == sizeof buf;
    ok &= check("256 KiB of writes");
    sys3(CLOSE, fd, 0, 0);
    fd = sys3(OPEN, (long)"vectors.tmp", 0, 0);
    put(who); put(": ");
    while (vsys(READ, fd, (long)buf, sizeof buf) > 0) {}
    ok &= check("reading them back");
    sys3(CLOSE, fd, 0, 0);
    put(who); put(": ");
    ok &= (vsys(SCHED_YIELD, 0, 0, 0), check("sched_yield"));
    put(who); put(": ");
    vspin(200000000);
    ok &= check("timer preemption");
    return ok;
}

__attribute__((used)) static void start_c(long *sp) {
    (void)sp;
    for (int i = 0; i < 256; i++) pattern[i] = (unsigned char)(i * 13 + 0x21);
    int ok = run("parent");
    /* A child gets the parent's registers at fork; both then run with different patterns. */
    long pid;
    __asm__ volatile("" ::: "memory");
    pid = vsys(FORK, 0, 0, 0);
    if (pid == 0) {
        ok &= check("fork (child)");
        for (int i = 0; i < 256; i++) pattern[i] = (unsigned char)(i * 5 + 0x77);
        exit_(run("child") ? 0 : 1);
    }
    int status = 0;
    sys3(WAIT4, pid, (long)&status, 0); /* first: the output's order does not depend on scheduling */
    ok &= check("fork (parent)");
    ok &= status == 0;
    put(ok ? "vector registers kept\n" : "vector registers CHANGED\n");
    exit_(ok ? 0 : 1);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
