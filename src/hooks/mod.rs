//! The intercepted entry points.
//!
//! Every hook keeps these invariants; the modules below rely on them:
//! - Untapped calls cost one table lookup, then the real function runs with
//!   the caller's arguments. The program's return value and `errno` are
//!   exactly the real call's.
//! - No lock is taken and nothing is allocated on the fd-level paths, so a
//!   signal handler or a fork child can always enter them. The stdio hooks
//!   take only the stream's own (recursive) lock, as the real call would.
//!   The disposition hooks (`signals`) take a per-signal lock only with
//!   every signal blocked on the calling thread, and never in a handler.
//! - The library's own work never changes `errno` (saved and restored) and
//!   never prints (it writes with raw system calls, not through hooks).
//! - Nothing panics: the crate is built with `panic = "abort"` and these
//!   paths use no operation that can panic.

pub mod fd;
pub mod files;
pub mod process;
pub mod signals;
#[cfg(target_env = "gnu")]
pub mod stdio;
