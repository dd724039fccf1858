//! Signals: dispositions, masks, pending sets, and delivery to handlers with Linux's x86-64
//! signal frame (`arch/x86/kernel/signal.c: setup_rt_frame`, `sys_rt_sigreturn`;
//! `kernel/signal.c: send_signal`, `get_signal`).
//!
//! A signal sent to a process becomes pending unless the process ignores it; pending signals
//! not blocked by its mask are acted on before the process next runs ([`Kernel::schedule`], as
//! Linux does on every return to user space): the default action ends the process or drops the
//! signal, a handler gets a frame on the user stack and returns through `rt_sigreturn` (the
//! `sa_restorer` trampoline every libc installs). A system call blocked in the kernel when a
//! handler runs fails with `EINTR`, or is restarted after it with `SA_RESTART`, as on Linux.
//!
//! Gaps, documented in docs/sandbox.md: no alternate signal stacks (handlers run on the current
//! stack), no job control (the stop signals are ignored), one pending instance per signal (no
//! real-time queueing), children of a parent that ignores `SIGCHLD` are not reaped
//! automatically.
use super::abi::{nr, Errno};
use super::elf::USER_END;
use super::mem::Memory;
use super::process::*;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
/// Signal numbers 1..=NSIG.
pub const NSIG: u8 = 64;

pub const SIGCHLD: u8 = 17;
const SIGCONT: u8 = 18;
const SIGSTOP: u8 = 19;

/// `si_code` values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
pub const SEGV_MAPERR: i32 = 1;

/// The bit of `sig` in a signal set.
pub fn bit(sig: u8) -> u64 {
    1u64 << (sig - 1)
}

/// Signals no mask can block and no handler can catch.
const UNBLOCKABLE: u64 = 1 << (sig::SIGKILL - 1) | 1 << (SIGSTOP - 1);

/// `struct kernel_sigaction` (x86-64): handler, flags, restorer, mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Action {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl Action {
    pub fn from_bytes(b: &[u8; 32]) -> Action {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Action { handler: w(0), flags: w(1), restorer: w(2), mask: w(3) }
    }
    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, v) in [self.handler, self.flags, self.restorer, self.mask].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// What the information of a pending signal says (`siginfo_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub code: i32,
    pub pid: u32,
    pub status: i32,
    pub addr: u64,
}

impl Info {
    /// Sent by `kill` from `pid`.
    pub fn user(pid: Pid) -> Info {
        Info { code: SI_USER, pid, ..Info::default() }
    }
    /// Raised by the kernel itself (SIGPIPE).
    pub fn kernel() -> Info {
        Info { code: SI_KERNEL, ..Info::default() }
    }
    /// `SIGCHLD`: child `pid` ended with `status`.
    pub fn child(pid: Pid, status: Status) -> Info {
        match status {
            Status::Exited(c) => Info { code: CLD_EXITED, pid, status: i32::from(c), addr: 0 },
            Status::Signaled(s) => Info { code: CLD_KILLED, pid, status: i32::from(s), addr: 0 },
        }
    }
    /// A fault at `addr`.
    pub fn fault(addr: u64) -> Info {
        Info { code: SEGV_MAPERR, addr, ..Info::default() }
    }

    /// The 128-byte `siginfo_t`: signo, errno, code, then the union (`_kill`/`_sigchld`: pid,
    /// uid, status; `_sigfault`: addr).
    fn bytes(&self, sig: u8) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&i32::from(sig).to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        if self.addr != 0 {
            b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        } else {
            b[16..20].copy_from_slice(&self.pid.to_le_bytes());
            b[20..24].copy_from_slice(&UID.to_le_bytes());
            b[24..28].copy_from_slice(&self.status.to_le_bytes());
        }
        b
    }
}

/// What a signal does to a process now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    Ignore,
    Terminate,
    Handle(Action),
}

/// A process's signal state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signals {
    actions: [Action; NSIG as usize],
    /// Blocked signals (`sigprocmask`).
    pub blocked: u64,
    pub pending: u64,
    info: [Info; NSIG as usize],
    /// The mask `rt_sigsuspend` waits with, while it waits.
    pub suspend: Option<u64>,
    /// The process was backed over a blocking system call to retry it: a handler delivered
    /// before the retry interrupts that call.
    pub restart: bool,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals { actions: [Action::default(); NSIG as usize], blocked: 0, pending: 0, info: [Info::default(); NSIG as usize], suspend: None, restart: false }
    }
}

impl Signals {
    /// A forked child's: the same actions and mask, nothing pending.
    pub fn fork(&self) -> Signals {
        Signals { actions: self.actions, blocked: self.blocked, ..Signals::default() }
    }

    /// After `execve`: handled signals go back to their default, ignored ones stay ignored, the
    /// mask and pending set are kept (`fs/exec.c: flush_signal_handlers`).
    pub fn exec(&mut self) {
        for a in self.actions.iter_mut() {
            *a = if a.handler == SIG_IGN { Action { handler: SIG_IGN, ..Action::default() } } else { Action::default() };
        }
        self.suspend = None;
        self.restart = false;
    }

    pub fn action(&self, sig: u8) -> Action {
        self.actions[usize::from(sig - 1)]
    }

    /// Sets an action; `SIGKILL` and `SIGSTOP` cannot be changed.
    pub fn set_action(&mut self, sig: u8, a: Action) -> Result<(), Errno> {
        if bit(sig) & UNBLOCKABLE != 0 {
            return Err(Errno::EINVAL);
        }
        self.actions[usize::from(sig - 1)] = a;
        // Setting a signal to be ignored discards it if pending (`do_sigaction`).
        if self.disposition(sig) == Disposition::Ignore {
            self.pending &= !bit(sig);
        }
        Ok(())
    }

    pub fn set_blocked(&mut self, mask: u64) {
        self.blocked = mask & !UNBLOCKABLE;
    }

    fn disposition(&self, sig: u8) -> Disposition {
        let a = self.action(sig);
        match a.handler {
            SIG_IGN => Disposition::Ignore,
            // No job control in the sandbox: the stop signals do nothing, like the ignored ones.
            SIG_DFL if matches!(sig, SIGCHLD | SIGCONT | 19..=22 | 23 | 28) => Disposition::Ignore,
            SIG_DFL => Disposition::Terminate,
            _ => Disposition::Handle(a),
        }
    }

    pub fn ignores(&self, sig: u8) -> bool {
        self.disposition(sig) == Disposition::Ignore
    }

    pub fn handles(&self, sig: u8) -> bool {
        matches!(self.disposition(sig), Disposition::Handle(_))
    }

    /// The lowest pending signal not in `mask`.
    fn next(&self, mask: u64) -> Option<u8> {
        let ready = self.pending & !(mask & !UNBLOCKABLE);
        (ready != 0).then(|| ready.trailing_zeros() as u8 + 1)
    }
}

/// The frame `setup_rt_frame` builds (`struct rt_sigframe`): the return address (`sa_restorer`),
/// the `ucontext` (flags, link, `stack_t`, `sigcontext`, mask), the `siginfo`.
const UC: usize = 8;
const MCONTEXT: usize = UC + 40;
const SIGMASK: usize = UC + 296;
const INFO: usize = UC + 304;
const FRAME: usize = INFO + 128;
/// `sigcontext`'s registers, in its order, as indices into `Regs::gpr`: r8–r15, rdi, rsi, rbp,
/// rbx, rdx, rax, rcx, rsp (then rip and eflags).
const SIGCONTEXT_GPRS: [usize; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 3, 2, 0, 1, 4];
/// Linux's user code and stack segments, as reported in `sigcontext` (never restored from it).
const USER_CS: u16 = 0x33;
const USER_SS: u16 = 0x2b;
/// What the `stack_t` of a frame says: no alternate stack.
const SS_DISABLE: u32 = 2;
/// MXCSR bits a program may set (`fxrstor` of anything else would fault in the agent).
const MXCSR_MASK: u32 = 0xffbf;
/// Flags a handler starts with cleared: TF, DF, RF.
const HANDLER_CLEARS: u64 = 0x100 | 0x400 | 0x1_0000;

/// Builds the frame for `sig` below `regs`'s stack: returns its bytes and address. The stack
/// pointer at the handler's entry is the frame, 8 below a 16-byte boundary (as after a call);
/// the 128-byte red zone is skipped; the FXSAVE image sits above the frame, 64-byte aligned.
fn frame(regs: &Regs, sig: u8, info: &Info, restorer: u64, saved_mask: u64) -> Option<(alloc::vec::Vec<u8>, u64)> {
    let sp = regs.gpr[RSP].checked_sub(128)?;
    let fp = sp.checked_sub(512)? & !63;
    let at = ((fp.checked_sub(FRAME as u64)?) & !15).checked_sub(8)?;
    let mut b = alloc::vec![0u8; (fp + 512 - at) as usize];
    b[0..8].copy_from_slice(&restorer.to_le_bytes());
    b[UC + 24..UC + 28].copy_from_slice(&SS_DISABLE.to_le_bytes());
    let mut w = |i: usize, v: u64| b[MCONTEXT + 8 * i..MCONTEXT + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
    for (i, &g) in SIGCONTEXT_GPRS.iter().enumerate() {
        w(i, regs.gpr[g]);
    }
    w(16, regs.rip);
    w(17, regs.rflags);
    w(18, u64::from(USER_CS) | u64::from(USER_SS) << 48);
    w(22, info.addr); // cr2
    w(23, fp); // fpstate
    b[SIGMASK..SIGMASK + 8].copy_from_slice(&saved_mask.to_le_bytes());
    b[INFO..INFO + 128].copy_from_slice(&info.bytes(sig));
    let f = (fp - at) as usize;
    b[f..f + 512].copy_from_slice(&regs.fpu.0);
    Some((b, at))
}

/// How a pending signal was acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Dropped,
    Handler,
    Ended,
}

impl<M: Memory> Kernel<M> {
    /// Sends `sig` to `pid` (`send_signal`): `SIGKILL` ends it at once; a signal it ignores and
    /// does not block is dropped; otherwise the signal is pending (one instance), and a process
    /// blocked in a system call is woken if the signal can reach it.
    pub fn send(&mut self, pid: Pid, sig: u8, info: Info) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if matches!(p.state, State::Zombie(_)) || sig == 0 || sig > NSIG {
            return;
        }
        if sig == sig::SIGKILL {
            self.end(pid, Status::Signaled(sig));
            return;
        }
        let b = bit(sig);
        if p.sig.ignores(sig) && p.sig.blocked & b == 0 {
            return;
        }
        if p.sig.pending & b == 0 {
            p.sig.pending |= b;
            p.sig.info[usize::from(sig - 1)] = info;
        }
        let mask = p.sig.suspend.unwrap_or(p.sig.blocked);
        if p.state == State::Blocked && mask & b == 0 {
            p.state = State::Runnable;
            self.enqueue(pid);
        }
    }

    /// The process to run next, once its pending signals are acted on (Linux does this on every
    /// return to user space): one handler frame per run; a signal that ends the process moves on
    /// to the next one.
    pub fn schedule(&mut self) -> Option<Pid> {
        loop {
            let pid = self.current()?;
            let p = self.p(pid);
            let Some(sig) = p.sig.next(p.sig.blocked) else { return Some(pid) };
            let mask = p.sig.blocked;
            match self.deliver(pid, sig, mask) {
                Delivery::Dropped => {}
                Delivery::Handler => return Some(pid),
                Delivery::Ended => {}
            }
        }
    }

    /// Takes pending `sig` off `pid` and acts on it; `saved` is the mask its handler's
    /// `rt_sigreturn` restores.
    pub(crate) fn deliver(&mut self, pid: Pid, sig: u8, saved: u64) -> Delivery {
        let p = self.pm(pid);
        p.sig.pending &= !bit(sig);
        let info = p.sig.info[usize::from(sig - 1)];
        match p.sig.disposition(sig) {
            Disposition::Ignore => Delivery::Dropped,
            Disposition::Terminate => {
                self.end(pid, Status::Signaled(sig));
                Delivery::Ended
            }
            Disposition::Handle(a) => {
                if self.enter_handler(pid, sig, &info, a, saved).is_err() {
                    // `force_sigsegv`: no restorer, or the frame does not fit on the stack.
                    self.notes.push(alloc::format!("sandbox: pid {pid}: cannot deliver signal {sig} (no SA_RESTORER or a bad stack); SIGSEGV"));
                    self.end(pid, Status::Signaled(sig::SIGSEGV));
                    return Delivery::Ended;
                }
                Delivery::Handler
            }
        }
    }

    fn enter_handler(&mut self, pid: Pid, sig: u8, info: &Info, a: Action, saved: u64) -> Result<(), Errno> {
        // A handler outside user space would make the agent's `iretq` fault, not the process.
        if a.flags & SA_RESTORER == 0 || a.handler >= USER_END {
            return Err(Errno::EFAULT);
        }
        let p = self.pm(pid);
        if p.sig.restart {
            // Interrupted in a blocking call: restart it after the handler when the action asks
            // and the call allows (`ERESTARTSYS`), else it fails with EINTR (`ERESTARTNOHAND`).
            p.sig.restart = false;
            let nr = p.regs.gpr[RAX];
            if a.flags & SA_RESTART == 0 || nr == nr::POLL || nr == nr::RT_SIGSUSPEND || nr == nr::PAUSE {
                p.regs.gpr[RAX] = Errno::EINTR.ret() as u64;
                p.regs.rip = p.regs.rip.wrapping_add(2);
            }
        }
        let (bytes, at) = frame(&p.regs, sig, info, a.restorer, saved).ok_or(Errno::EFAULT)?;
        p.mem.write(at, &bytes).map_err(Errno::from)?;
        p.regs.gpr[RSP] = at;
        p.regs.gpr[RDI] = u64::from(sig);
        p.regs.gpr[RSI] = at + INFO as u64;
        p.regs.gpr[RDX] = at + UC as u64;
        p.regs.gpr[RAX] = 0;
        p.regs.rip = a.handler;
        p.regs.rflags &= !HANDLER_CLEARS;
        p.regs.fpu = Fpu::default();
        let mut blocked = p.sig.blocked | a.mask;
        if a.flags & SA_NODEFER == 0 {
            blocked |= bit(sig);
        }
        p.sig.set_blocked(blocked);
        if a.flags & SA_RESETHAND != 0 {
            p.sig.actions[usize::from(sig - 1)] = Action::default();
        }
        Ok(())
    }

    /// `rt_sigreturn`: the registers, mask and x87/SSE state saved in the frame come back. A
    /// return address outside user space, or an unreadable frame, ends the process (SIGSEGV).
    pub(crate) fn sigreturn(&mut self, pid: Pid) -> Delivery {
        let p = self.pm(pid);
        let uc = p.regs.gpr[RSP]; // the handler's `ret` popped the restorer's address
        let mut b = [0u8; 304];
        let restored = p.mem.read(uc, &mut b).ok().and_then(|_| {
            let w = |i: usize| u64::from_le_bytes(b[40 + 8 * i..48 + 8 * i].try_into().expect("8 bytes"));
            let rip = w(16);
            if rip >= USER_END {
                return None;
            }
            let mut fpu = Fpu::default();
            let fp = w(23);
            if fp != 0 {
                p.mem.read(fp, &mut fpu.0).ok()?;
                let mxcsr = u32::from_le_bytes(fpu.0[24..28].try_into().expect("4 bytes")) & MXCSR_MASK;
                fpu.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
            }
            for (i, &g) in SIGCONTEXT_GPRS.iter().enumerate() {
                p.regs.gpr[g] = w(i);
            }
            p.regs.rip = rip;
            p.regs.rflags = w(17);
            p.regs.fpu = fpu;
            p.sig.set_blocked(u64::from_le_bytes(b[296..304].try_into().expect("8 bytes")));
            Some(())
        });
        if restored.is_none() {
            self.notes.push(alloc::format!("sandbox: pid {pid}: rt_sigreturn with a bad frame; SIGSEGV"));
            self.end(pid, Status::Signaled(sig::SIGSEGV));
            return Delivery::Ended;
        }
        Delivery::Handler
    }

    /// `rt_sigsuspend`: waits with `mask` until a signal is acted on; returns EINTR after its
    /// handler (the mask in force before the call comes back with `rt_sigreturn`).
    pub(crate) fn sigsuspend(&mut self, pid: Pid, mask: u64) -> Option<Delivery> {
        let p = self.pm(pid);
        let mask = mask & !UNBLOCKABLE;
        let Some(sig) = p.sig.next(mask) else {
            p.sig.suspend = Some(mask);
            return None;
        };
        let saved = p.sig.blocked;
        p.regs.gpr[RAX] = Errno::EINTR.ret() as u64;
        p.sig.blocked = mask;
        let d = self.deliver(pid, sig, saved);
        if d == Delivery::Dropped {
            // Not acted on after all (made ignored meanwhile): keep waiting.
            let p = self.pm(pid);
            p.sig.blocked = saved;
            p.sig.suspend = Some(mask);
            return None;
        }
        Some(d)
    }

    /// A synchronous fault: its handler runs if the process has one and does not block the
    /// signal (true: dealt with, the handler runs or the process has ended); otherwise the
    /// caller ends the process (`force_sig_fault`).
    pub(crate) fn fault_signal(&mut self, pid: Pid, sig: u8, addr: u64) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else { return true };
        if !p.sig.handles(sig) || p.sig.blocked & bit(sig) != 0 {
            return false;
        }
        p.sig.pending |= bit(sig);
        p.sig.info[usize::from(sig - 1)] = Info::fault(addr);
        let mask = p.sig.blocked;
        self.deliver(pid, sig, mask);
        true
    }
}
