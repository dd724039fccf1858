//! Host-side verification: image digests, launch measurements, evidence.

pub mod measure;
pub mod evidence;
/// The host file system as a NAR source (the agent's serialiser over real paths).
pub mod nixfs;
