//! A copy from the program's memory that a bad pointer cannot crash.
//!
//! Why: a tapped write's bytes go to the shared ring's intent slot before
//! the real system call (transport), so that a SIGKILL ending the call
//! leaves them where the sink finds them. That copy reads the caller's
//! buffer before the kernel has checked it. A `write` given a bad pointer
//! returns `EFAULT` without the library, and must with it (promise 1).
//!
//! How: [`copy`] is a few instructions of assembly. A fault in one of them
//! raises SIGSEGV or SIGBUS on this thread; the library's handler for
//! those (`hooks::signals`) first asks [`fixup`], which sees that the
//! faulting instruction lies inside the routine, moves the thread's
//! program counter to the routine's failure exit and returns, so the
//! copy returns `false` and the hook goes on as if there were no intent
//! (the real call then returns `EFAULT`). It is the kernel's own way for
//! `copy_from_user` (a table of instructions allowed to fault, and where
//! each resumes), with one range instead of a table. A system call that
//! cannot fault (`process_vm_readv` on the process itself) costs 1.5 to
//! 1.9 µs a write here, five times the write it guards; this costs one
//! `rep movsb` (x86_64) or a word loop (aarch64).
//!
//! When: only where [`usable`]. A fault signal reaches the library's
//! handler only if the kernel holds that handler for both SIGSEGV and
//! SIGBUS and the faulting thread has neither blocked (a blocked or
//! ignored fault signal kills the process whatever its handler).
//! - Process-wide, [`armed`]: `hooks::signals` arms it in the constructor
//!   when the library's handler holds both signals, and disarms it for
//!   good before the program sets its own disposition for either (a
//!   handler, `SIG_IGN`, `SIG_HOLD`) or gives any handler an `sa_mask`
//!   that blocks either (that mask holds while the handler runs, which
//!   nothing here can see).
//! - Per thread, the mask: the hooks of `sigprocmask`, `pthread_sigmask`,
//!   `sighold`, `sigblock` and `sigsetmask` note before the call that it
//!   may block a fault signal ([`note_blocking`]), and that the mask is
//!   to be read again after one that may unblock ([`note_unknown`]); an
//!   unknown mask is read with one system call at the thread's next use.
//!   A thread that blocks every signal for a moment (to start a worker
//!   that inherits the mask) goes without only for that moment.
//!
//! Disarmed, or in a thread with a fault signal blocked, the hooks copy
//! after the call, as before intent slots existed. Not seen: a mask or
//! disposition set with a raw `rt_sigprocmask`/`rt_sigaction` system call,
//! a mask `siglongjmp` or `setcontext` restores, `sigsuspend`'s and
//! `ppoll`'s temporary masks (DESIGN, "the guarded copy").
//!
//! Invariants:
//! - [`copy`] touches no memory but `src..src+n` and `dst..dst+n`, and no
//!   register the C ABI does not let a call clobber, so resuming at its
//!   failure exit leaves the caller exactly as a normal return would.
//! - [`fixup`] acts only on a fault the kernel raised (`si_code > 0`) at an
//!   instruction of [`copy`]; anything else (a `kill -SEGV`, a fault
//!   anywhere else) is left to the handler's usual course.

use core::sync::atomic::{AtomicBool, Ordering::*};

static ARMED: AtomicBool = AtomicBool::new(false);

/// Whether a fault in [`copy`] comes back as `false` (see the module).
#[inline]
pub fn armed() -> bool {
    ARMED.load(Acquire)
}

/// The library's handler holds SIGSEGV and SIGBUS, and neither is blocked.
pub fn arm() {
    ARMED.store(true, Release);
}

/// For good: the program is about to own or ignore a fault signal, or
/// to block one in a handler's mask.
pub fn disarm() {
    ARMED.store(false, Release);
}

/// Per thread: whether the fault signals are blocked, as far as the hooks
/// know (see the module).
const MASK_UNKNOWN: u8 = 0;
const MASK_CLEAR: u8 = 1;
const MASK_BLOCKED: u8 = 2;

std::thread_local! {
    /// Const-initialised, no destructor: a new thread starts unknown (it
    /// inherited its creator's mask, whatever that was).
    static MASK: core::cell::Cell<u8> = const { core::cell::Cell::new(MASK_UNKNOWN) };
}

/// The bits of SIGSEGV and SIGBUS in the first word of a signal mask.
pub const FAULT_BITS: u64 = 1 << (libc::SIGSEGV - 1) | 1 << (libc::SIGBUS - 1);

/// Whether a fault in [`copy`] on this thread comes back as `false`:
/// [`armed`], and neither fault signal blocked on this thread. One
/// thread-local load; one system call the first time on a thread and
/// after a mask change that may have unblocked one.
#[inline]
pub fn usable() -> bool {
    armed() && MASK.with(|m| m.get() == MASK_CLEAR || (m.get() == MASK_UNKNOWN && read_mask(m)))
}

#[cold]
fn read_mask(m: &core::cell::Cell<u8>) -> bool {
    let mut set = 0u64;
    let _e = crate::sys::ErrnoGuard::new();
    // SAFETY: a query of this thread's mask into an 8-byte word (the
    // kernel's sigset size).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            core::ptr::null::<u64>(),
            &mut set as *mut u64,
            8usize,
        )
    };
    let clear = r == 0 && set & FAULT_BITS == 0;
    m.set(if clear { MASK_CLEAR } else { MASK_BLOCKED });
    clear
}

/// Before a call that may block a fault signal on this thread.
pub fn note_blocking() {
    MASK.with(|m| m.set(MASK_BLOCKED));
}

/// After a call that may have unblocked one: read the mask again when it
/// matters.
pub fn note_unknown() {
    MASK.with(|m| m.set(MASK_UNKNOWN));
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.logtap_guarded_copy,\"ax\",@progbits",
    ".p2align 4",
    ".globl logtap_guarded_copy",
    ".hidden logtap_guarded_copy",
    ".type logtap_guarded_copy,@function",
    // rdi = dst, rsi = src, rdx = n; eax = 0 when done.
    "logtap_guarded_copy:",
    "mov rcx, rdx",
    "rep movsb",
    "xor eax, eax",
    "ret",
    // A fault resumes here (`fixup`): eax = 1.
    ".globl logtap_guarded_copy_failed",
    ".hidden logtap_guarded_copy_failed",
    "logtap_guarded_copy_failed:",
    "mov eax, 1",
    "ret",
    ".size logtap_guarded_copy, . - logtap_guarded_copy",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .text.logtap_guarded_copy,\"ax\",%progbits",
    ".p2align 4",
    ".globl logtap_guarded_copy",
    ".hidden logtap_guarded_copy",
    ".type logtap_guarded_copy,%function",
    // x0 = dst, x1 = src, x2 = n; w0 = 0 when done. Words, then bytes.
    "logtap_guarded_copy:",
    "cmp x2, #8",
    "b.lo 2f",
    "1:",
    "ldr x3, [x1], #8",
    "str x3, [x0], #8",
    "sub x2, x2, #8",
    "cmp x2, #8",
    "b.hs 1b",
    "2:",
    "cbz x2, 4f",
    "3:",
    "ldrb w3, [x1], #1",
    "strb w3, [x0], #1",
    "subs x2, x2, #1",
    "b.ne 3b",
    "4:",
    "mov w0, #0",
    "ret",
    // A fault resumes here (`fixup`): w0 = 1.
    ".globl logtap_guarded_copy_failed",
    ".hidden logtap_guarded_copy_failed",
    "logtap_guarded_copy_failed:",
    "mov w0, #1",
    "ret",
    ".size logtap_guarded_copy, . - logtap_guarded_copy",
    ".popsection",
);

extern "C" {
    fn logtap_guarded_copy(dst: *mut u8, src: *const u8, n: usize) -> u32;
    fn logtap_guarded_copy_failed();
}

/// Copies `n` bytes from `src` to `dst`; `false` when a fault stopped it
/// (then `dst` holds some prefix, of no use). Call only where [`usable`]:
/// otherwise a fault is the program's crash.
///
/// # Safety
/// `dst..dst+n` is memory the caller owns and may write; `src` may be any
/// address (that is the point).
#[inline]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) -> bool {
    logtap_guarded_copy(dst, src, n) == 0
}

/// Reads the `u64` at `p`, or `None` if that faults (see [`copy`]).
///
/// # Safety
/// As [`copy`].
pub unsafe fn read_u64(p: *const u8) -> Option<u64> {
    let mut v = 0u64;
    copy(&mut v as *mut u64 as *mut u8, p, 8).then_some(v)
}

/// Whether all of `p..p+n` can be read: one guarded byte read per page (a
/// page is readable or not as a whole, so that is exact). True where not
/// [`usable`], where nothing can be checked: the callers then go on as
/// they did before this module existed (and a bad pointer faults).
///
/// # Safety
/// `p` may be any address.
pub unsafe fn readable(p: *const u8, n: usize) -> bool {
    if n == 0 || !usable() {
        return true;
    }
    // The smallest page size of the platforms built for; a larger page
    // only means more reads of the same page.
    const PAGE: usize = 4096;
    let Some(end) = (p as usize).checked_add(n) else {
        return false;
    };
    let mut at = p as usize;
    let mut b = 0u8;
    while at < end {
        if !copy(&mut b, at as *const u8, 1) {
            return false;
        }
        match (at | (PAGE - 1)).checked_add(1) {
            Some(next) => at = next,
            None => break,
        }
    }
    true
}

/// From the SIGSEGV or SIGBUS handler, first: if the kernel raised it for
/// an instruction of [`copy`], resume that thread at the copy's failure
/// exit and return true (the handler returns at once).
///
/// # Safety
/// `info` and `ctx` are the handler's own `SA_SIGINFO` arguments.
pub unsafe fn fixup(info: *const libc::siginfo_t, ctx: *mut libc::c_void) -> bool {
    if info.is_null() || ctx.is_null() || (*info).si_code <= 0 {
        return false;
    }
    let start = logtap_guarded_copy as *const () as usize;
    let failed = logtap_guarded_copy_failed as *const () as usize;
    let uc = &mut *(ctx as *mut libc::ucontext_t);
    #[cfg(target_arch = "x86_64")]
    let pc = &mut uc.uc_mcontext.gregs[libc::REG_RIP as usize];
    #[cfg(target_arch = "aarch64")]
    let pc = &mut uc.uc_mcontext.pc;
    let at = *pc as usize;
    if at < start || at >= failed {
        return false;
    }
    *pc = failed as _;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn handler(_sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel's own handler arguments.
        if !unsafe { fixup(info, ctx) } {
            // SAFETY: a fault outside the copy: die of it, as without us.
            unsafe { libc::abort() };
        }
    }

    /// The copy copies every length, and a fault anywhere in the source
    /// (an unmapped low address, a PROT_NONE page right after readable
    /// bytes) or the destination comes back as `false`.
    #[test]
    fn copies_and_survives_faults() {
        // SAFETY: a SIGSEGV/SIGBUS handler for this test binary only, an
        // anonymous mapping of two pages, the second made PROT_NONE.
        unsafe {
            let mut a: libc::sigaction = core::mem::zeroed();
            a.sa_sigaction = handler as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void)
                as libc::sighandler_t;
            a.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &a, core::ptr::null_mut());
            libc::sigaction(libc::SIGBUS, &a, core::ptr::null_mut());
            for n in 0..300usize {
                let src: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
                let mut dst = vec![0u8; n];
                assert!(copy(dst.as_mut_ptr(), src.as_ptr(), n));
                assert_eq!(dst, src, "length {n}");
            }
            let mut dst = [0u8; 64];
            assert!(!copy(dst.as_mut_ptr(), 16 as *const u8, 10));
            assert_eq!(read_u64(8 as *const u8), None);
            let page = 4096usize;
            let m = libc::mmap(
                core::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(m as *mut libc::c_void, libc::MAP_FAILED);
            assert_eq!(
                libc::mprotect(m.add(page) as *mut _, page, libc::PROT_NONE),
                0
            );
            // 50 readable bytes, then the guard page.
            assert!(!copy(dst.as_mut_ptr(), m.add(page - 50), 64));
            assert!(copy(dst.as_mut_ptr(), m.add(page - 50), 50));
            arm();
            assert!(readable(m, page));
            assert!(readable(m.add(page - 1), 1));
            assert!(!readable(m.add(page - 1), 2));
            assert!(!readable(16 as *const u8, 1));
            assert!(!readable(usize::MAX as *const u8, 2));
            disarm();
            assert!(readable(16 as *const u8, 1), "disarmed: nothing is checked");
            // A destination that faults too.
            let v = [1u8; 32];
            assert!(!copy(m.add(page - 16), v.as_ptr(), 32));
            assert!(read_u64(m.add(page - 8)).is_some());
            assert_eq!(read_u64(m.add(page - 4)), None);
            libc::munmap(m as *mut _, 2 * page);
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
        }
    }
}
