//! The peer's pid of a Unix stream socket, through `SO_PEERCRED`.
//!
//! The one place with `unsafe` in the sink: std's `peer_cred` is not stable.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// The pid of the process that connected (as of `connect`), if the kernel
/// tells it.
pub fn peer_pid(sock: &impl AsRawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable `ucred` and `len` holds its exact
    // size, which is what SO_PEERCRED writes; the fd is borrowed from a live
    // socket for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 && len as usize == std::mem::size_of::<libc::ucred>() && cred.pid > 0 {
        Some(cred.pid as u32)
    } else {
        None
    }
}
