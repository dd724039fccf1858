/* A static program with no libc, for the sandbox tests: `probe MODE`. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(int fd, const char *s) { sys3(1, fd, (long)s, len(s)); }
static int eq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }

__attribute__((used)) static void start_c(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    const char *mode = argc > 1 ? argv[1] : "hello";
    if (eq(mode, "hello")) {
        put(1, "hello from ring 3\n");
        for (long i = 0; i < argc; i++) { put(1, argv[i]); put(1, "\n"); }
        for (char **e = envp; *e; e++) { put(2, *e); put(2, "\n"); }
        sys3(231, 42, 0, 0);
    } else if (eq(mode, "hlt")) {
        __asm__ volatile("hlt");
    } else if (eq(mode, "kernel-read")) {
        put(1, "reading agent memory\n");
        volatile char c = *(volatile char *)0xffffffff80100000UL;
        (void)c;
    } else if (eq(mode, "kernel-write")) {
        *(volatile char *)0xffff800000200000UL = 1;
    } else if (eq(mode, "efault")) {
        long r = sys3(1, 1, 0xffffffff80100000L, 16);
        put(1, r == -14 ? "EFAULT\n" : "no EFAULT\n");
        long r2 = sys3(1, 1, 0x8000000000000000L, 16);
        put(1, r2 == -14 ? "EFAULT\n" : "no EFAULT\n");
        sys3(231, 0, 0, 0);
    } else if (eq(mode, "enosys")) {
        long r = sys3(9999, 0, 0, 0);
        put(1, r == -38 ? "ENOSYS\n" : "no ENOSYS\n");
        sys3(231, 0, 0, 0);
    } else if (eq(mode, "ud2")) {
        __asm__ volatile("ud2");
    }
    sys3(231, 3, 0, 0);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
