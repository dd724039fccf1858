//! The builder's world, as safe code: loading a static Linux executable and the initial stack
//! Linux gives it. (The arch layer maps the pages and runs it in ring 3.)
pub mod elf;
pub mod fs;
pub mod syscall;
