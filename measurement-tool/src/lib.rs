//! Host-side verification: image digests, launch measurements, evidence.

pub mod measure;
pub mod evidence;
