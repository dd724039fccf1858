//! PCI: configuration space through the legacy 0xCF8/0xCFC ports (enough for the 256-byte
//! header virtio's capabilities live in), and BAR placement — we are the firmware, so nobody
//! else assigns the devices' addresses.
use super::cpu::{inl, outl};
use super::layout::MMIO_WINDOW;
use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot};

#[derive(Clone, Copy, Debug)]
pub struct DeviceAddr {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

fn address(d: DeviceAddr, offset: u8) -> u32 {
    0x8000_0000 | (u32::from(d.bus) << 16) | (u32::from(d.device) << 11) | (u32::from(d.function) << 8) | u32::from(offset & 0xFC)
}

pub fn read_config(d: DeviceAddr, offset: u8) -> u32 {
    outl(0xCF8, address(d, offset));
    inl(0xCFC)
}

pub fn write_config(d: DeviceAddr, offset: u8, value: u32) {
    outl(0xCF8, address(d, offset));
    outl(0xCFC, value);
}

/// Configuration access through the ports, for virtio-drivers.
pub struct PortCam;

impl ConfigurationAccess for PortCam {
    fn read_word(&self, f: DeviceFunction, offset: u8) -> u32 {
        read_config(DeviceAddr { bus: f.bus, device: f.device, function: f.function }, offset)
    }
    fn write_word(&mut self, f: DeviceFunction, offset: u8, data: u32) {
        write_config(DeviceAddr { bus: f.bus, device: f.device, function: f.function }, offset, data)
    }
    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Places every memory BAR of `f` in the MMIO window (naturally aligned) and enables memory
/// decoding and bus mastering. `next` is the window's allocation cursor.
pub fn assign_bars(root: &mut PciRoot<PortCam>, f: DeviceFunction, next: &mut u64) -> Result<(), &'static str> {
    let mut index = 0u8;
    while index < 6 {
        let info = root.bar_info(f, index).map_err(|_| "unreadable BAR")?;
        let two = info.as_ref().is_some_and(BarInfo::takes_two_entries);
        if let Some(BarInfo::Memory { size, .. }) = info {
            if size > 0 {
                let addr = next.next_multiple_of(size.max(0x1000));
                if addr + size > MMIO_WINDOW.end {
                    return Err("MMIO window exhausted");
                }
                if two {
                    root.set_bar_64(f, index, addr);
                } else {
                    root.set_bar_32(f, index, addr as u32);
                }
                *next = addr + size;
            }
        }
        index += if two { 2 } else { 1 };
    }
    root.set_command(f, Command::MEMORY_SPACE | Command::BUS_MASTER);
    Ok(())
}
