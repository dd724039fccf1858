//! The builder's world, as safe code: loading a static Linux executable and the initial stack
//! Linux gives it. (The arch layer maps the pages and runs it in ring 3.)
pub mod elf;
pub mod fs;
pub mod syscall;
// The fuller kernel from the sandbox work (processes, pipes, fork/exec/wait, the broad syscall
// set, its own file system `kfs`), landed side by side to be unified with the layer above; see
// docs/sandbox-kernel.md.
pub mod abi;
pub mod image;
pub mod kfs;
pub mod linux;
pub mod mem;
pub mod process;
