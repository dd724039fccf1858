//! virtio over PCI (virtio 1.2 §4.1), the portable part: where a modern device's structures
//! are, from its capability list. The firmware (`arch/virtio.rs`) reads the configuration space
//! and drives the device; everything here is checked logic over what it read.
//!
//! Every value comes from the (untrusted) device: the walk is bounded, each structure must lie
//! in the BAR slot the agent gives the device, and each must be long enough for what the agent
//! accesses in it.

/// virtio's PCI vendor ID and the modern (non-transitional) virtio-blk device ID (§4.1.2.1:
/// 0x1040 + device type 2).
pub const VENDOR: u16 = 0x1AF4;
pub const DEVICE_BLK_MODERN: u16 = 0x1042;

/// Feature bits the agent accepts (§6): VIRTIO_F_VERSION_1 always, VIRTIO_F_ACCESS_PLATFORM
/// when offered (QEMU requires it when `iommu_platform=on`, which it forces for SEV-SNP and
/// TDX guests). Nothing else: no indirect descriptors, no event index, no device options.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device status bits (§2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// Offsets in the common configuration structure (§4.1.4.3).
pub mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_ENABLE: u64 = 0x1C;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The structure's length up to and including `queue_device`.
    pub const LEN: u32 = 0x38;
}

/// The bytes of one BAR the agent maps for a device (its BAR is placed at an address whose
/// lowest set bit is this size, so a device that keeps the address decodes at most this much).
pub const BAR_SLOT: u64 = 1 << 20;

/// One structure: in BAR `bar`, at `offset`, `length` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// What the driver needs: the common configuration, the notification area (and its
/// multiplier) and the device-specific configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Structures {
    pub common: Region,
    pub notify: Region,
    pub notify_multiplier: u32,
    pub device: Region,
}

/// Why a device's capabilities cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The status register says there is no capability list, or the pointer is outside the
    /// capability area.
    NoList,
    /// More capabilities than fit in the configuration space: a loop.
    Loop,
    /// A virtio capability shorter than its structure.
    Short,
    /// A structure the driver needs is missing.
    Missing(&'static str),
    /// A structure names a BAR that does not exist, or lies outside [`BAR_SLOT`], or is too
    /// short for the registers the agent uses, or the structures are in different BARs.
    BadRegion(&'static str),
}

const CAP_VENDOR: u8 = 0x09;
const TYPE_COMMON: u8 = 1;
const TYPE_NOTIFY: u8 = 2;
const TYPE_DEVICE: u8 = 4;

/// Walks the capability list that starts at `pointer` (configuration offset 0x34), reading
/// dwords with `read32(offset)` (offsets 4-aligned, < 256), and returns the first usable
/// common, notify and device structures (§4.1.4: "the driver SHOULD use the first one").
/// `device_min` is how many bytes of device configuration the driver reads.
pub fn find_structures(pointer: u8, device_min: u32, mut read32: impl FnMut(u8) -> u32) -> Result<Structures, CapError> {
    let (mut common, mut notify, mut device) = (None, None, None);
    let mut at = pointer & 0xFC;
    // 48 capabilities of 4 bytes fill the 192 bytes after the header: any more is a loop.
    for _ in 0..48 {
        if at == 0 {
            break;
        }
        if at < 0x40 {
            return Err(CapError::NoList);
        }
        let head = read32(at);
        let (id, next, len, kind) = (head as u8, (head >> 8) as u8, (head >> 16) as u8, (head >> 24) as u8);
        let wanted = match kind {
            TYPE_COMMON => common.is_none(),
            TYPE_NOTIFY => notify.is_none(),
            TYPE_DEVICE => device.is_none(),
            _ => false,
        };
        if id == CAP_VENDOR && wanted {
            let need = if kind == TYPE_NOTIFY { 20 } else { 16 };
            if len < need || usize::from(at) + usize::from(need) > 256 {
                return Err(CapError::Short);
            }
            let region = Region { bar: read32(at + 4) as u8, offset: read32(at + 8), length: read32(at + 12) };
            match kind {
                TYPE_COMMON => common = Some(region),
                TYPE_DEVICE => device = Some(region),
                _ => notify = Some((region, read32(at + 16))),
            }
        }
        at = next & 0xFC;
        if at == 0 {
            break;
        }
        if common.is_some() && notify.is_some() && device.is_some() {
            break;
        }
    }
    if at != 0 && !(common.is_some() && notify.is_some() && device.is_some()) {
        return Err(CapError::Loop);
    }
    let common = common.ok_or(CapError::Missing("common configuration"))?;
    let (notify, notify_multiplier) = notify.ok_or(CapError::Missing("notification"))?;
    let device = device.ok_or(CapError::Missing("device configuration"))?;
    // The agent accesses the common and device structures with up to 8-byte loads and stores,
    // and the notification area with 2-byte stores: each must be aligned for them.
    let fits = |r: &Region, min: u32, what| {
        if r.offset % if min == 2 { 2 } else { 8 } != 0 {
            return Err(CapError::BadRegion("a misaligned structure"));
        }
        if r.bar > 5 {
            return Err(CapError::BadRegion("a BAR index above 5"));
        }
        if r.length < min {
            return Err(CapError::BadRegion(what));
        }
        if u64::from(r.offset) + u64::from(r.length.max(min)) > BAR_SLOT {
            return Err(CapError::BadRegion("a structure beyond the BAR slot"));
        }
        Ok(())
    };
    fits(&common, common::LEN, "a short common configuration")?;
    fits(&device, device_min, "a short device configuration")?;
    fits(&notify, 2, "a short notification area")?;
    if common.bar != notify.bar || common.bar != device.bar {
        return Err(CapError::BadRegion("structures in different BARs"));
    }
    Ok(Structures { common, notify, notify_multiplier, device })
}

/// The notification address of a queue, as an offset in the BAR (§4.1.4.4:
/// `offset + queue_notify_off * notify_off_multiplier`), if it lies inside the notification
/// area with room for the 2-byte write.
pub fn notify_offset(s: &Structures, queue_notify_off: u16) -> Option<u32> {
    let within = u64::from(queue_notify_off) * u64::from(s.notify_multiplier);
    (within + 2 <= u64::from(s.notify.length) && within % 2 == 0).then(|| s.notify.offset + within as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's virtio-blk-pci with `disable-legacy=on,iommu_platform=on,vectors=0`, as the
    /// agent read it (configuration bytes 0x40..0x98): common at 0x40, ISR 0x50, device 0x60,
    /// notify 0x70, PCI-configuration access 0x84; the list starts at 0x84 (QEMU prepends).
    fn qemu_config() -> [u8; 256] {
        let mut c = [0u8; 256];
        let mut cap = |at: usize, next: u8, len: u8, kind: u8, bar: u8, offset: u32, length: u32| {
            c[at..at + 4].copy_from_slice(&[CAP_VENDOR, next, len, kind]);
            c[at + 4] = bar;
            c[at + 8..at + 12].copy_from_slice(&offset.to_le_bytes());
            c[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
        };
        cap(0x40, 0x00, 16, 1, 4, 0x0000, 0x1000);
        cap(0x50, 0x40, 16, 3, 4, 0x1000, 0x1000);
        cap(0x60, 0x50, 16, 4, 4, 0x2000, 0x1000);
        cap(0x70, 0x60, 20, 2, 4, 0x3000, 0x1000);
        cap(0x84, 0x70, 20, 5, 0, 0, 0);
        c[0x80..0x84].copy_from_slice(&4u32.to_le_bytes());
        c[0x34] = 0x84;
        c
    }

    fn reader(c: &[u8; 256]) -> impl FnMut(u8) -> u32 + '_ {
        |o| u32::from_le_bytes(c[usize::from(o)..usize::from(o) + 4].try_into().unwrap())
    }

    #[test]
    fn finds_qemus_structures() {
        let c = qemu_config();
        let s = find_structures(c[0x34], 8, reader(&c)).unwrap();
        assert_eq!(s.common, Region { bar: 4, offset: 0, length: 0x1000 });
        assert_eq!(s.device, Region { bar: 4, offset: 0x2000, length: 0x1000 });
        assert_eq!(s.notify, Region { bar: 4, offset: 0x3000, length: 0x1000 });
        assert_eq!(s.notify_multiplier, 4);
        assert_eq!(notify_offset(&s, 0), Some(0x3000));
        assert_eq!(notify_offset(&s, 1023), Some(0x3000 + 4092));
        assert_eq!(notify_offset(&s, 1024), None);
    }

    #[test]
    fn refuses_loops_short_caps_and_regions_outside_the_slot() {
        let mut looped = qemu_config();
        looped[0x41] = 0x84; // common → cfg → notify → … → common: a loop
        looped[0x43] = 9; // and the common one unusable, so the walk never ends early
        assert_eq!(find_structures(0x84, 8, reader(&looped)), Err(CapError::Loop));

        let mut short = qemu_config();
        short[0x72] = 16; // a notify capability without its multiplier
        assert_eq!(find_structures(0x84, 8, reader(&short)), Err(CapError::Short));

        let mut far = qemu_config();
        far[0x68..0x6C].copy_from_slice(&0x000F_FFFCu32.to_le_bytes());
        assert!(matches!(find_structures(0x84, 8, reader(&far)), Err(CapError::BadRegion(_))));

        let mut bar = qemu_config();
        bar[0x44] = 6;
        assert!(matches!(find_structures(0x84, 8, reader(&bar)), Err(CapError::BadRegion(_))));

        let mut odd = qemu_config();
        odd[0x68] = 4; // the device configuration at 0x2004: no aligned 8-byte capacity
        assert_eq!(find_structures(0x84, 8, reader(&odd)), Err(CapError::BadRegion("a misaligned structure")));

        let mut tiny = qemu_config();
        tiny[0x6C..0x70].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(find_structures(0x84, 8, reader(&tiny)), Err(CapError::BadRegion(_))));

        let none = qemu_config();
        assert_eq!(find_structures(0x20, 8, reader(&none)), Err(CapError::NoList));
        let mut missing = qemu_config();
        missing[0x43] = 3; // the common capability turned into a second ISR one
        assert_eq!(find_structures(0x84, 8, reader(&missing)), Err(CapError::Missing("common configuration")));
    }
}
