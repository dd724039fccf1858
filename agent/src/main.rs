//! The agent firmware. Placeholder: replaced by the boot implementation.
#![no_std]
#![no_main]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
