//! The peer's credentials on a Unix stream socket, through `SO_PEERCRED`.
//!
//! The one place with `unsafe` in the sink: std's `peer_cred` is not stable.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Who connected: the kernel's record of the peer at `connect` time. The
/// uid and gid are trustworthy (the peer cannot choose them); the pid may
/// be missing (another pid namespace) and can be reused after the peer
/// exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The peer's pid, uid and gid, as far as the kernel tells them.
pub fn peer_cred(sock: &impl AsRawFd) -> PeerCred {
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
    if rc != 0 || len as usize != std::mem::size_of::<libc::ucred>() {
        return PeerCred::default();
    }
    // The kernel reports the overflow ids (65534) for credentials it cannot
    // map into our user namespace; they are still what it says.
    PeerCred {
        pid: (cred.pid > 0).then_some(cred.pid as u32),
        uid: Some(cred.uid),
        gid: Some(cred.gid),
    }
}

/// The pid of the process that connected (as of `connect`), if the kernel
/// tells it.
pub fn peer_pid(sock: &impl AsRawFd) -> Option<u32> {
    peer_cred(sock).pid
}

/// The sink's own real uid (its own records carry it as a peer's would).
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
