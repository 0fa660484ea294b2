//! Seeing what a program writes through its C library's stdio.
//!
//! The two libcs need different techniques, behind one interface:
//! - glibc (`glibc.rs`): stdio writes through internal functions that no
//!   preloaded symbol can replace and validates its `FILE` vtables, so the
//!   public stdio entry points are hooked and each tapped stream's buffer
//!   is watched around the real call.
//! - musl (`musl.rs`): every `FILE` carries its own `write` function
//!   pointer, through which all of stdio (printf, puts, putc, the flush at
//!   exit) ends up; wrapping that pointer sees every byte at the moment it
//!   is written.

#[cfg(target_env = "gnu")]
mod glibc;
#[cfg(target_env = "gnu")]
pub use glibc::*;

#[cfg(target_env = "musl")]
mod musl;
#[cfg(target_env = "musl")]
pub use musl::*;

use libc::{c_int, FILE};

extern "C" {
    pub fn flockfile(f: *mut FILE);
    pub fn funlockfile(f: *mut FILE);
    pub fn ftrylockfile(f: *mut FILE) -> c_int;
}
