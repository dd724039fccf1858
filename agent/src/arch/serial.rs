//! The agent's log. Lines go to a ring in memory (`agent::logring`, 64 KiB) that the channel
//! drains into `Log` frames (`drain`); that costs no VM exit. COM1 (16550 UART at 0x3F8, two
//! exits per byte) is used only when the loader asks for a debug log (the request disk's flag:
//! `enable_debug`, then every line is also written there as it is logged, the backlog first),
//! or for a fatal error: a panic, an exception, a failure before the channel exists
//! (`emergency_print`, `dump`).
use super::cpu::{inb, outb};
use agent::logring::{self, Line, LogRing};
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

const COM1: u16 = 0x3F8;

struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    // Wait for the transmit holding register to be empty (QEMU's is always ready).
    while inb(COM1 + 5) & 0x20 == 0 {}
    outb(COM1, b);
}

/// The UART has been programmed.
static SERIAL_UP: AtomicBool = AtomicBool::new(false);
/// Every line also goes to the serial port (the loader's debug flag).
static ECHO: AtomicBool = AtomicBool::new(false);
/// The ring is being used (a line logged meanwhile, from an exception handler, goes to the
/// serial port instead of touching it).
static BUSY: AtomicBool = AtomicBool::new(false);

static mut RING: LogRing<{ logring::CAPACITY }> = LogRing::new();

/// Runs `f` on the ring, unless it is in use already (then returns None).
fn with_ring<R>(f: impl FnOnce(&mut LogRing<{ logring::CAPACITY }>) -> R) -> Option<R> {
    if BUSY.swap(true, Ordering::Acquire) {
        return None;
    }
    // SAFETY: one CPU; BUSY makes this the only live reference (a nested call, from an
    // exception or NMI handler while `f` runs, gets None above).
    let r = f(unsafe { &mut *core::ptr::addr_of_mut!(RING) });
    BUSY.store(false, Ordering::Release);
    Some(r)
}

fn serial_init() {
    if SERIAL_UP.swap(true, Ordering::Relaxed) {
        return;
    }
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    outb(COM1 + 2, 0xC7); // FIFO
}

fn serial_line(level: u8, text: &[u8]) {
    serial_init();
    let text = core::str::from_utf8(text).unwrap_or("(not UTF-8)");
    let _ = writeln!(Serial, "[{:5} {:>6}M] {}", logring::level_name(level), super::cpu::rdtsc() >> 20, text);
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let mut line = Line::new();
        let _ = write!(line, "{}", record.args());
        let level = record.level() as u8;
        if ECHO.load(Ordering::Relaxed) {
            serial_line(level, line.as_bytes());
        }
        if with_ring(|r| r.push(level, line.as_bytes())).is_none() && !ECHO.load(Ordering::Relaxed) {
            serial_line(level, line.as_bytes());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger (no device access: the serial port is programmed when first needed).
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// The loader asked for a debug log: the backlog, then every line, also to the serial port.
pub fn enable_debug() {
    if ECHO.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut backlog = Vec::new();
    with_ring(|r| r.peek(|level, text| backlog.push((level, text.to_vec()))));
    for (level, text) in backlog {
        serial_line(level, &text);
    }
}

/// Hands the waiting lines to `f` (the channel's `Log` frames), oldest first. They are copied
/// out first, so `f` may do anything, even log.
pub fn drain(f: &mut dyn FnMut(u8, &[u8])) {
    let mut lines = Vec::new();
    with_ring(|r| r.drain(|level, text| lines.push((level, text.to_vec()))));
    for (level, text) in lines {
        f(level, &text);
    }
}

/// Fatal: the lines the loader has not received go to the serial port (unless they went there
/// already), without allocating.
pub fn dump() {
    if ECHO.load(Ordering::Relaxed) {
        return;
    }
    with_ring(|r| r.drain(serial_line));
}

/// Prints without the logger (for panics and exceptions), after the lines the loader has not
/// received.
pub fn emergency_print(args: core::fmt::Arguments) {
    dump();
    serial_init();
    let _ = Serial.write_fmt(args);
}
