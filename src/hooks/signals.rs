//! Fatal signals: what is buffered is delivered before the process dies of
//! a signal whose action is the default (SIGTERM from `docker stop`, a
//! SIGSEGV, SIGPIPE in `yes | head`), and the program cannot tell.
//!
//! In the constructor, when anything is tapped (and `LLT_FATAL_SIGNALS` is
//! on), each signal of [`CAUGHT`] whose disposition is `SIG_DFL` gets the
//! library's handler. The handler delivers (`transport::at_fatal_signal`),
//! puts `SIG_DFL` back and sends the same signal to the same thread, so the
//! process dies of that very signal when the handler returns: same wait
//! status, same core dump, and for a hardware fault the original context.
//!
//! The program's view is kept with hooks on every function that reads or
//! sets a disposition (`sigaction`, `signal`, `bsd_signal`, `ssignal`,
//! `sysv_signal`, `__sysv_signal`, `sigset`, `sigignore`, `siginterrupt`:
//! libc's own implementations call an internal `sigaction` the `sigaction`
//! hook never sees).
//!
//! Invariants:
//! - A disposition the program sets other than `SIG_DFL` (a handler,
//!   `SIG_IGN`) goes to the kernel unchanged: the library steps aside.
//!   `SIG_IGN` or a handler found at start is never replaced.
//! - Whenever the kernel holds the library's handler for a signal, the
//!   program's view of that signal is the `SIG_DFL` disposition it last set
//!   (or inherited), exactly as libc returned it when it was replaced (the
//!   kernel's filtering of flags and mask included): the library records it
//!   from the old value of the very `sigaction` call that installs its
//!   handler. Queries return it, with exactly the bytes libc writes (found
//!   once in the constructor), so a program sees the same struct as
//!   without the library. Return values and errno are the real calls';
//!   invalid and uncaught signals go straight to the real function.
//! - Changes go through a per-signal lock taken with every signal blocked
//!   on the calling thread, so no handler can interrupt its holder on the
//!   same thread; a holder that is gone (the lock came into a fork child)
//!   is detected by its thread id and the lock taken over. The handler
//!   itself takes no lock of these.
//! - A vfork child (on its parent's memory) only reads this state; its
//!   handler goes straight to the default action.
//! - The handler never touches the ring in a vfork child, runs only system
//!   calls, atomics and bounded waits (`transport::at_fatal_signal`), and a
//!   second thread dying at the same time waits for the first one's flush
//!   (bounded) instead of flushing again.
//! - An asynchronous signal that lands inside a tapped hook (between its
//!   real call and the buffer) is only noted; the hook stores what the call
//!   wrote and then the process dies of it (`transport::Tapping`). A
//!   one-shot timer brings it back after `BACKSTOP_MS`, and a noted signal
//!   that comes back ends the process at once, so a hook that never
//!   finishes (blocked again, or jumped out of) delays death by that much
//!   at most. Signals a faulting instruction raises are never deferred.
//! - A SIGSEGV or SIGBUS the kernel raised inside the library's guarded
//!   copy (`crate::guarded`) is not the program's: the handler's first
//!   step turns it into a failed copy and returns. The guarded copy is
//!   armed only while this handler holds both signals (the disposition
//!   hooks disarm it for good before the program's own disposition, or a
//!   handler mask blocking one, takes effect), and used only in threads
//!   with neither blocked (the mask hooks `sigprocmask`,
//!   `pthread_sigmask`, `sighold`, `sigblock`, `sigsetmask`, which change
//!   nothing themselves, note a thread's changes before they take
//!   effect).

use crate::{config, guarded, real, sys, transport};
use core::cell::UnsafeCell;
use core::mem::{size_of, MaybeUninit};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering::*};
use libc::{c_int, c_void, sighandler_t};

/// The signals whose default action ends the process (with or without a
/// core dump). Not the real-time ones (a program that uses them sets
/// handlers), never libc's internal 32-34, not SIGKILL/SIGSTOP (no handler
/// possible), not the stops and the ignored-by-default ones.
pub const CAUGHT: [c_int; 22] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGUSR1,
    libc::SIGSEGV,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGSTKFLT,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSYS,
];

const SLOTS: usize = 32;
const SA_SIZE: usize = size_of::<libc::sigaction>();

/// Set in the constructor once the handlers are in place; until then (and
/// with the setting off, or nothing tapped) every hook is the real call.
static ENABLED: AtomicBool = AtomicBool::new(false);

struct State {
    /// Per signal: the thread id holding its lock (0: free).
    lock: [AtomicI32; SLOTS],
    /// Per signal: the program's view, valid once the library's handler
    /// was installed for it (`view_set`).
    view: UnsafeCell<[MaybeUninit<libc::sigaction>; SLOTS]>,
    view_set: [AtomicBool; SLOTS],
    /// Which bytes of a `struct sigaction` libc writes for an old value
    /// (all but padding in glibc), found in the constructor.
    written: UnsafeCell<[bool; SA_SIZE]>,
}

// SAFETY: `view[i]` is written only with `lock[i]` held (signals blocked
// on the holder), and read either under it or by a vfork child (which
// only reads); `written` is written in the constructor only.
unsafe impl Sync for State {}

static STATE: State = State {
    lock: [const { AtomicI32::new(0) }; SLOTS],
    view: UnsafeCell::new([const { MaybeUninit::zeroed() }; SLOTS]),
    view_set: [const { AtomicBool::new(false) }; SLOTS],
    written: UnsafeCell::new([false; SA_SIZE]),
};

/// The thread doing the fatal-signal flush (0: none yet).
static DYING: AtomicI32 = AtomicI32::new(0);

fn caught(sig: c_int) -> bool {
    ENABLED.load(Acquire) && CAUGHT.contains(&sig)
}

fn ours() -> sighandler_t {
    on_fatal as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as sighandler_t
}

fn zeroed_action() -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
    unsafe { MaybeUninit::zeroed().assume_init() }
}

fn our_action() -> libc::sigaction {
    let mut a = zeroed_action();
    a.sa_sigaction = ours();
    // No SA_RESTART: when the handler returns without the process dying
    // (a signal noted during a tapped write, see `on_fatal`), the write
    // it interrupted must return rather than go on waiting on a full
    // pipe; the hook then ends the process before the program sees it.
    a.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut a.sa_mask) };
    a
}

/// Installs the handler for every caught signal whose disposition is
/// `SIG_DFL` now.
///
/// # Safety
/// Constructor only (after the transport is set up).
pub unsafe fn init() {
    let c = config::get();
    if !c.fatal_signals || !transport::anything_tapped() {
        return;
    }
    // Which bytes libc's sigaction writes into an old value: the same
    // whatever the buffer held before.
    let (mut a, mut b) = (zeroed_action(), zeroed_action());
    core::ptr::write_bytes(&mut b as *mut libc::sigaction as *mut u8, 0xff, SA_SIZE);
    if real::sigaction(libc::SIGTERM, core::ptr::null(), &mut a) != 0
        || real::sigaction(libc::SIGTERM, core::ptr::null(), &mut b) != 0
    {
        return;
    }
    let (pa, pb) = (bytes(&a), bytes(&b));
    let written = &mut *STATE.written.get();
    for i in 0..SA_SIZE {
        written[i] = pa[i] == pb[i];
    }
    let mine = our_action();
    for &sig in &CAUGHT {
        let mut now = zeroed_action();
        if real::sigaction(sig, core::ptr::null(), &mut now) != 0
            || now.sa_sigaction != libc::SIG_DFL
        {
            // Ignored or handled (inherited SIG_IGN: nohup): not ours.
            continue;
        }
        let mut view = zeroed_action();
        if real::sigaction(sig, &mine, &mut view) == 0 {
            *slot_view(sig) = view;
            STATE.view_set[sig as usize].store(true, Release);
        }
    }
    transport::set_fatal_action(die_later);
    ENABLED.store(true, Release);
    // The intent copy may read a bad pointer only when its fault comes
    // back to this library's handler: both fault signals ours (each
    // thread's mask is followed apart: `guarded::usable`).
    if STATE.view_set[libc::SIGSEGV as usize].load(Acquire)
        && STATE.view_set[libc::SIGBUS as usize].load(Acquire)
    {
        guarded::arm();
    }
}

/// Whether the mask at `set` (a `sigset_t`, whose first word is the
/// kernel's) has a fault signal; true when it cannot be told (this thread
/// may not read it guarded, or the read faults: the real call then fails
/// with `EFAULT` and changes nothing, and the thread only goes without
/// intent slots until its mask is read again).
///
/// # Safety
/// `set` is non-null, any address (read with the guarded copy).
unsafe fn has_fault_bits(set: *const libc::sigset_t) -> bool {
    !guarded::usable()
        || !matches!(guarded::read_u64(set as *const u8), Some(w) if w & guarded::FAULT_BITS == 0)
}

/// A mask call of this thread (`sigprocmask`, `pthread_sigmask`): noted as
/// blocking before it when it may block a fault signal, and as unknown
/// after it when it may unblock one (see `guarded`).
///
/// # Safety
/// `set` is null or any address.
unsafe fn mask_call(how: c_int, set: *const libc::sigset_t, call: impl FnOnce() -> c_int) -> c_int {
    if set.is_null() {
        return call();
    }
    let blocks = how != libc::SIG_UNBLOCK && has_fault_bits(set);
    if blocks {
        guarded::note_blocking();
    }
    let r = call();
    // Again after the call (a signal handler that ran in between may have
    // noted its own view): a block stays noted; after any other change
    // the mask is read again when it matters.
    if how == libc::SIG_BLOCK {
        if blocks {
            guarded::note_blocking();
        }
    } else {
        guarded::note_unknown();
    }
    r
}

/// Before the program changes the disposition of `sig` to `h`: anything
/// but `SIG_DFL` for a fault signal (its own handler, `SIG_IGN`, `SIG_HOLD`)
/// disarms the guarded copy, whose faults would no longer reach the
/// library.
fn may_own(sig: c_int, h: sighandler_t) {
    if (sig == libc::SIGSEGV || sig == libc::SIGBUS) && h != libc::SIG_DFL {
        guarded::disarm();
    }
}

/// `may_own` for a `sigaction` the program makes, and a handler whose
/// `sa_mask` blocks a fault signal (while it runs, which nothing here
/// sees) disarms the guarded copy too. A struct that cannot be read is
/// left to the real call, which fails with `EFAULT`.
///
/// # Safety
/// `act` is null or any address (read with the guarded copy).
unsafe fn may_change(sig: c_int, act: *const libc::sigaction) {
    if act.is_null() || !guarded::armed() {
        return;
    }
    // The handler and the first word of its mask. A thread with a fault
    // signal blocked (a worker started with every signal blocked, setting
    // SIGPIPE to SIG_IGN) cannot read them guarded: it asks the kernel
    // (rare, and about 1.5 µs), and assumes the worst if even that fails.
    let mut a = MaybeUninit::<libc::sigaction>::zeroed();
    let dst = a.as_mut_ptr() as *mut u8;
    let n = size_of::<libc::sigaction>();
    let read = if guarded::usable() {
        guarded::copy(dst, act as *const u8, n)
    } else {
        sys::read_self(dst, act as *const u8, n)
    };
    if !read {
        if guarded::usable() {
            // A bad pointer: the real call fails with EFAULT.
            return;
        }
        return guarded::disarm();
    }
    let a = a.assume_init();
    let h = a.sa_sigaction;
    may_own(sig, h);
    // SIG_DFL and SIG_IGN run no handler: their mask never applies.
    let mask = *(core::ptr::addr_of!(a.sa_mask) as *const u64);
    if h != libc::SIG_DFL && h != libc::SIG_IGN && mask & guarded::FAULT_BITS != 0 {
        guarded::disarm();
    }
}

fn bytes(a: &libc::sigaction) -> &[u8; SA_SIZE] {
    // SAFETY: a sigaction is SA_SIZE readable bytes.
    unsafe { &*(a as *const libc::sigaction as *const [u8; SA_SIZE]) }
}

/// # Safety
/// Only with the signal's lock held (or read-only in a vfork child).
unsafe fn slot_view(sig: c_int) -> &'static mut libc::sigaction {
    (*STATE.view.get())[sig as usize].assume_init_mut()
}

/// Copies an old value to the program's `oact`: exactly the bytes libc
/// writes there, so the rest of its struct keeps what it held.
///
/// # Safety
/// `oact` is null or points to a writable `struct sigaction`.
unsafe fn give_old(oact: *mut libc::sigaction, from: &libc::sigaction) {
    if oact.is_null() {
        return;
    }
    let written = &*STATE.written.get();
    let src = bytes(from);
    let dst = oact as *mut u8;
    for i in 0..SA_SIZE {
        if written[i] {
            *dst.add(i) = src[i];
        }
    }
}

/// A signal's lock, held with every signal blocked on this thread.
struct Held {
    sig: usize,
    mask: libc::sigset_t,
}

fn rt_sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) {
    // SAFETY: valid sigset pointers (or null); the kernel's sigset is 8 bytes.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, how, set, old, 8usize) };
}

fn lock(sig: c_int) -> Held {
    let _e = sys::ErrnoGuard::new();
    let mut all: libc::sigset_t = unsafe_zeroed_set();
    let mut mask: libc::sigset_t = unsafe_zeroed_set();
    // SAFETY: valid sigset_t; sigfillset leaves out libc's internal signals.
    unsafe { libc::sigfillset(&mut all) };
    rt_sigprocmask(libc::SIG_SETMASK, &all, &mut mask);
    let me = sys::gettid();
    let l = &STATE.lock[sig as usize];
    let mut spins = 0u32;
    loop {
        match l.compare_exchange(0, me, Acquire, Relaxed) {
            Ok(_) => break,
            Err(owner) => {
                spins += 1;
                // The holder runs two system calls with signals blocked;
                // one that no longer exists (a fork child's copy of the
                // lock) never lets go: take it over.
                if spins & 63 == 0
                    && !sys::thread_alive(owner)
                    && l.compare_exchange(owner, me, Acquire, Relaxed).is_ok()
                {
                    break;
                }
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
    Held {
        sig: sig as usize,
        mask,
    }
}

fn unsafe_zeroed_set() -> libc::sigset_t {
    // SAFETY: all-zero is the empty sigset_t.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _e = sys::ErrnoGuard::new();
        STATE.lock[self.sig].store(0, Release);
        rt_sigprocmask(libc::SIG_SETMASK, &self.mask, core::ptr::null_mut());
    }
}

/// After a change the program made to `sig` (with its lock held): if the
/// kernel now holds `SIG_DFL`, the library's handler goes back in, and the
/// old value of that very call is the program's new view.
unsafe fn settle(sig: c_int, _held: &Held) {
    let _e = sys::ErrnoGuard::new();
    let mut now = zeroed_action();
    if real::sigaction(sig, core::ptr::null(), &mut now) != 0 || now.sa_sigaction != libc::SIG_DFL {
        return;
    }
    let mut view = zeroed_action();
    if real::sigaction(sig, &our_action(), &mut view) == 0 {
        *slot_view(sig) = view;
        STATE.view_set[sig as usize].store(true, Release);
    }
}

/// What the program sees of an old value `old` the kernel returned: its
/// own view where the kernel held the library's handler.
unsafe fn seen(sig: c_int, old: &libc::sigaction) -> libc::sigaction {
    if old.sa_sigaction == ours() && STATE.view_set[sig as usize].load(Acquire) {
        *slot_view(sig)
    } else {
        *old
    }
}

/// A `signal`-style result: the library's handler reads as `SIG_DFL`.
fn seen_handler(h: sighandler_t) -> sighandler_t {
    if h == ours() {
        libc::SIG_DFL
    } else {
        h
    }
}

unsafe fn sigaction_impl(
    real: unsafe fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int,
    sig: c_int,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> c_int {
    may_change(sig, act);
    if !caught(sig) {
        return real(sig, act, oact);
    }
    if sys::in_vfork_child() {
        // The parent's memory: read the view, change nothing of ours.
        let mut old = zeroed_action();
        let r = real(sig, act, &mut old);
        if r == 0 {
            let _e = sys::ErrnoGuard::new();
            give_old(oact, &seen(sig, &old));
        }
        return r;
    }
    let held = lock(sig);
    let mut old = zeroed_action();
    let r = real(sig, act, &mut old);
    let e = sys::errno();
    if r == 0 {
        let before = seen(sig, &old);
        if !act.is_null() {
            settle(sig, &held);
        }
        give_old(oact, &before);
    }
    drop(held);
    sys::set_errno(e);
    r
}

/// `signal`, `sysv_signal`, `sigset`…: the real function, then `settle`;
/// the old handler it returns reads `SIG_DFL` where it was ours.
///
/// `sigset` reads and changes the thread's signal mask (it returns
/// `SIG_HOLD` for a blocked signal, and blocks or unblocks it), so it runs
/// before the lock is taken, which blocks every signal: `reads_mask`.
unsafe fn signal_impl(
    real: unsafe fn(c_int, sighandler_t) -> sighandler_t,
    sig: c_int,
    h: sighandler_t,
    reads_mask: bool,
) -> sighandler_t {
    may_own(sig, h);
    if !caught(sig) {
        return real(sig, h);
    }
    if sys::in_vfork_child() {
        return seen_handler(real(sig, h));
    }
    let (r, e, held) = if reads_mask {
        let r = real(sig, h);
        let e = sys::errno();
        (r, e, lock(sig))
    } else {
        let held = lock(sig);
        let r = real(sig, h);
        (r, sys::errno(), held)
    };
    if r != libc::SIG_ERR {
        settle(sig, &held);
    }
    drop(held);
    sys::set_errno(e);
    seen_handler(r)
}

/// # Safety
/// Same contract as libc `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> c_int {
    sigaction_impl(real::sigaction, sig, act, oact)
}

/// glibc exports its implementation under this name too.
///
/// # Safety
/// Same contract as libc `sigaction`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn __sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> c_int {
    sigaction_impl(real::sigaction, sig, act, oact)
}

/// # Safety
/// Same contract as libc `signal`.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::signal, sig, h, false)
}

/// # Safety
/// Same contract as libc `bsd_signal`.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::bsd_signal, sig, h, false)
}

/// # Safety
/// Same contract as glibc `ssignal`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn ssignal(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::ssignal, sig, h, false)
}

/// # Safety
/// Same contract as glibc `sysv_signal`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::sysv_signal, sig, h, false)
}

/// # Safety
/// Same contract as libc `__sysv_signal`.
#[no_mangle]
pub unsafe extern "C" fn __sysv_signal(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::__sysv_signal, sig, h, false)
}

/// `sigset(sig, SIG_HOLD)` only blocks the signal: `settle` finds the
/// library's handler still there and leaves it.
///
/// # Safety
/// Same contract as libc `sigset`.
#[no_mangle]
pub unsafe extern "C" fn sigset(sig: c_int, h: sighandler_t) -> sighandler_t {
    signal_impl(real::sigset, sig, h, true)
}

/// # Safety
/// Same contract as libc `sigignore`.
#[no_mangle]
pub unsafe extern "C" fn sigignore(sig: c_int) -> c_int {
    may_own(sig, libc::SIG_IGN);
    if !caught(sig) || sys::in_vfork_child() {
        return real::sigignore(sig);
    }
    let held = lock(sig);
    let r = real::sigignore(sig);
    drop(held);
    r
}

/// libc's `siginterrupt` reads the disposition and sets it back with
/// `SA_RESTART` changed: on the library's handler that changes nothing
/// that matters, so the change is made to the program's view as well.
///
/// # Safety
/// Same contract as libc `siginterrupt`.
#[no_mangle]
pub unsafe extern "C" fn siginterrupt(sig: c_int, flag: c_int) -> c_int {
    if !caught(sig) || sys::in_vfork_child() {
        return real::siginterrupt(sig, flag);
    }
    let held = lock(sig);
    let r = real::siginterrupt(sig, flag);
    let e = sys::errno();
    if r == 0 {
        let mut now = zeroed_action();
        if real::sigaction(sig, core::ptr::null(), &mut now) == 0
            && now.sa_sigaction == ours()
            && STATE.view_set[sig as usize].load(Acquire)
        {
            let v = slot_view(sig);
            if flag != 0 {
                v.sa_flags &= !libc::SA_RESTART;
            } else {
                v.sa_flags |= libc::SA_RESTART;
            }
        }
    }
    drop(held);
    sys::set_errno(e);
    r
}

/// # Safety
/// Same contract as libc `sigprocmask`.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    mask_call(how, set, || real::sigprocmask(how, set, old))
}

/// # Safety
/// Same contract as libc `pthread_sigmask`.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    mask_call(how, set, || real::pthread_sigmask(how, set, old))
}

/// # Safety
/// Same contract as libc `sighold`.
#[no_mangle]
pub unsafe extern "C" fn sighold(sig: c_int) -> c_int {
    if sig == libc::SIGSEGV || sig == libc::SIGBUS {
        guarded::note_blocking();
    }
    real::sighold(sig)
}

/// Before an old BSD mask call (`mask`: a word of `sigmask(sig)` bits)
/// that blocks a fault signal.
#[cfg(target_env = "gnu")]
fn note_bsd_block(mask: c_int) {
    if (mask as u32 as u64) & guarded::FAULT_BITS != 0 {
        guarded::note_blocking();
    }
}

/// The old BSD mask calls: `mask` is a word of `sigmask(sig)` bits.
///
/// # Safety
/// Same contract as glibc `sigblock`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn sigblock(mask: c_int) -> c_int {
    note_bsd_block(mask);
    real::sigblock(mask)
}

/// # Safety
/// Same contract as glibc `sigsetmask`.
#[cfg(target_env = "gnu")]
#[no_mangle]
pub unsafe extern "C" fn sigsetmask(mask: c_int) -> c_int {
    note_bsd_block(mask);
    let r = real::sigsetmask(mask);
    guarded::note_unknown();
    r
}

/// Whether this handler runs with stack room for a drain: not on a small
/// alternate signal stack (SIGSTKSZ is 8 KiB on x86_64; a drain takes
/// several KiB more than that).
fn stack_room() -> bool {
    let mut ss: libc::stack_t = libc::stack_t {
        ss_sp: core::ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: a query only, into our own stack_t.
    if unsafe {
        libc::syscall(
            libc::SYS_sigaltstack,
            core::ptr::null::<libc::stack_t>(),
            &mut ss,
        )
    } != 0
        || ss.ss_flags & libc::SS_ONSTACK == 0
    {
        return true;
    }
    let here = &ss as *const libc::stack_t as usize;
    here.saturating_sub(ss.ss_sp as usize) >= 64 << 10
}

/// The library's handler for a caught signal: deliver, put `SIG_DFL`
/// back, send the same signal to this thread. It is pending (blocked
/// while the handler runs) and delivered as the handler returns, with its
/// default action.
extern "C" fn on_fatal(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // A fault of the intent copy reading a bad pointer: that copy fails
    // and the hook goes on (the real call returns EFAULT). First, before
    // anything else may touch memory or state.
    // SAFETY: the kernel's own SA_SIGINFO arguments.
    if (sig == libc::SIGSEGV || sig == libc::SIGBUS) && unsafe { guarded::fixup(info, ctx) } {
        return;
    }
    let _e = sys::ErrnoGuard::new();
    if sys::in_vfork_child() {
        return die_now(sig, false);
    }
    // Landed while this thread's hook is between a real write and the
    // buffer (the usual moment for a program writing flat out): the hook
    // stores what the call wrote, then `die_later` ends the process. Only
    // for signals that are never a fault of the instruction itself (one of
    // those, returned from, would fault again at once).
    if !SYNCHRONOUS.contains(&sig) {
        match transport::defer_fatal(sig) {
            transport::Defer::Noted => {
                // The hook may never finish: its real call can block again
                // (stdio retries a short write, another thread holds the
                // stream's lock while blocked on a full pipe) or a
                // program's handler can jump out of it. The signal comes
                // back after BACKSTOP_MS and then ends the process anyway.
                arm_backstop(sig);
                return;
            }
            transport::Defer::Now(noted) => return die_now(noted, true),
            transport::Defer::No => {}
        }
    }
    die_now(sig, true);
}

/// How long a noted signal waits for the hook it landed in before it ends
/// the process anyway. A hook stores what its call wrote in microseconds;
/// only a thread descheduled longer than this loses that write (and the
/// flush tells the target it was dropped).
const BACKSTOP_MS: i64 = 200;

/// Sends `sig` to this thread again in `BACKSTOP_MS`, with a one-shot POSIX
/// timer (two system calls: async-signal-safe, and nothing of the
/// program's timers or alarms changes). When the hook ends first, the
/// process dies before the timer fires (or with the signal pending).
fn arm_backstop(sig: c_int) {
    // The kernel's `struct sigevent` (64 bytes): value, signo, notify,
    // and for SIGEV_THREAD_ID the target thread.
    #[repr(C)]
    struct KSigevent {
        value: usize,
        signo: c_int,
        notify: c_int,
        tid: c_int,
        pad: [c_int; 11],
    }
    const SIGEV_THREAD_ID: c_int = 4;
    let ev = KSigevent {
        value: 0,
        signo: sig,
        notify: SIGEV_THREAD_ID,
        tid: sys::gettid(),
        pad: [0; 11],
    };
    let mut id: c_int = 0;
    let when = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: BACKSTOP_MS * 1_000_000,
        },
    };
    // SAFETY: valid pointers to a sigevent, a timer id and an itimerspec
    // on this stack; raw system calls only.
    unsafe {
        if libc::syscall(
            libc::SYS_timer_create,
            libc::CLOCK_MONOTONIC,
            &ev as *const KSigevent,
            &mut id as *mut c_int,
        ) == 0
        {
            libc::syscall(
                libc::SYS_timer_settime,
                id,
                0,
                &when as *const libc::itimerspec,
                core::ptr::null_mut::<libc::itimerspec>(),
            );
        }
    }
}

/// Signals a faulting instruction raises (also when sent with `kill`:
/// they are never deferred).
const SYNCHRONOUS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// After a tapped call stored its bytes, for a signal noted meanwhile.
unsafe fn die_later(sig: i32) {
    // Other handlers could run meanwhile: block them, as in the handler.
    let mut all = unsafe_zeroed_set();
    libc::sigfillset(&mut all);
    rt_sigprocmask(libc::SIG_BLOCK, &all, core::ptr::null_mut());
    die_now(sig, true);
    // The signal is pending and blocked: unblock it alone, so that it is
    // delivered now, with its default action.
    let mut one = unsafe_zeroed_set();
    libc::sigaddset(&mut one, sig);
    rt_sigprocmask(libc::SIG_UNBLOCK, &one, core::ptr::null_mut());
}

/// Delivers (unless in a vfork child), puts `SIG_DFL` back and sends the
/// signal to this thread: blocked in the handler, it is delivered with its
/// default action as the handler returns.
fn die_now(sig: c_int, deliver_first: bool) {
    if deliver_first {
        deliver();
    }
    let dfl = zeroed_action();
    // SAFETY: SIG_DFL for this signal (only this task's table in a vfork
    // child), then tgkill to this very thread.
    unsafe {
        real::sigaction(sig, &dfl, core::ptr::null_mut());
        libc::syscall(libc::SYS_tgkill, sys::getpid(), sys::gettid(), sig);
    }
}

/// One thread flushes; another dying at the same time waits for it
/// (bounded), then dies of its own signal.
fn deliver() {
    let me = sys::gettid();
    loop {
        match DYING.compare_exchange(0, me, AcqRel, Acquire) {
            Ok(_) => break,
            Err(owner) if owner == me => return,
            Err(owner) if !sys::thread_alive(owner) => {
                // A fork child's copy of a parent thread's flush.
                if DYING.compare_exchange(owner, me, AcqRel, Acquire).is_ok() {
                    break;
                }
            }
            Err(_) => {
                let deadline = sys::now_ms() + config::get().exit_timeout_ms + 500;
                while DYING.load(Acquire) != 0 && sys::now_ms() < deadline {
                    sys::sleep_ms(1);
                }
                return;
            }
        }
    }
    transport::at_fatal_signal(stack_room());
    DYING.store(0, Release);
}
