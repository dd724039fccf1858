//! COM1 (16550 UART at 0x3F8): the agent's log, for humans. QEMU sends it to a file.
use super::cpu::{inb, outb};
use core::fmt::Write;

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

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        // Millions of TSC cycles since reset: relative timings for whoever reads the log.
        let _ = writeln!(Serial, "[{:5} {:>6}M] {}", record.level(), super::cpu::rdtsc() >> 20, record.args());
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    outb(COM1 + 2, 0xC7); // FIFO
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Prints without the logger (for panics and exceptions).
pub fn emergency_print(args: core::fmt::Arguments) {
    let _ = Serial.write_fmt(args);
}
